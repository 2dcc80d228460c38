"""What a sweep directory holds: `results.jsonl` (one line per run) and `sweep.json`.

The results file is a sweep's only state (pycls: analyse runs by their
metaparameters). Each line is written whole or not at all (`files.append_line`);
a line cut by a kill, or an older line of a retried point, is dropped when the
file is read. `sweep.json` names the sweep (its config and overrides: one workdir
holds one sweep) and holds the experiment file's report declaration, so the report
needs nothing else. The sweep writes both; the report only reads them.

Beside them: RUN_DIR/point.json, the resolved config each point was started with
(a rerun compares it with what the experiment file gives now), and `slurm_jobs.json`,
the SLURM job of each point submitted (a rerun re-attaches to it).
"""

from __future__ import annotations

import json
import os
from typing import Any

from squeezejax import configs
from squeezejax import files
from squeezejax import families
from squeezejax import findings
from squeezejax.errors import UserError

RESULTS = 'results.jsonl'
SWEEP_JSON = 'sweep.json'
POINT_JSON = 'point.json'
JOBS_JSON = 'slurm_jobs.json'
METRICS = ('params', 'size_mib', 'macs', 'steps', 'final_train_loss', 'top1', 'top5',
           'train_img_s', 'wall_s')


def read(path: str) -> list[dict[str, Any]]:
  """Records in file order, the last line of a name winning; torn lines are skipped."""
  if not os.path.exists(path):
    return []
  by_name: dict[str, dict] = {}
  with open(path, 'rb') as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue  # a line cut by a kill or power loss
      if isinstance(record, dict) and 'name' in record:
        by_name.pop(record['name'], None)  # the winning line's position counts
        by_name[record['name']] = record
  return list(by_name.values())


def append(path: str, record: dict[str, Any]) -> None:
  files.append_line(path, json.dumps(record, sort_keys=True))


def rewrite(path: str, records: list[dict[str, Any]]) -> None:
  files.write_atomic(path, ''.join(json.dumps(r, sort_keys=True) + '\n' for r in records))


def repair(path: str) -> list[dict[str, Any]]:
  """`read`, rewriting the file only if it holds torn or duplicate lines."""
  records = read(path)
  if os.path.exists(path):
    with open(path, 'rb') as f:
      lines = f.read().splitlines(keepends=True)
    if len(lines) != len(records) or not all(line.endswith(b'\n') for line in lines):
      rewrite(path, records)
  return records


def ok_record(name: str, run_dir: str, overrides: dict[str, Any],
              result: dict[str, Any]) -> dict[str, Any]:
  """A line from the trainer's result.json dict (a vmapped seed's entry merged in)."""
  spec = result.get('spec', {})
  record = {'name': name, 'status': 'ok', 'run_dir': run_dir,
            'seed': result.get('seed', overrides.get('seed')), 'overrides': overrides,
            'dataset': result.get('config', {}).get('dataset'),
            'image_size': result.get('image_size')}
  record.update({k: spec.get(k) for k in families.METAPARAMETERS})
  record.update({k: result.get(k) for k in METRICS})
  # Wall seconds beyond the steps at their steady rate: compiling, evaluating, saving.
  record['overhead_s'] = result.get('timing', {}).get('overhead_s')
  return record


def failed_record(name: str, overrides: dict[str, Any], config, error: str) -> dict[str, Any]:
  """A line for a run that failed: the metaparameters its config asked for (the
  config.model preset under any set config.spec field), if the config loads."""
  record = {'name': name, 'status': 'failed', 'run_dir': name, 'seed': overrides.get('seed'),
            'overrides': overrides, 'error': error}
  if config is not None:
    fields = configs.spec_fields(config)
    record.update({k: fields.get(k) for k in families.METAPARAMETERS})
    record['dataset'] = config.dataset
  return record


def read_sweep_info(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, SWEEP_JSON)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def write_sweep_info(workdir: str, config_arg: str, overrides: dict[str, Any],
                     report: dict[str, Any] | None) -> None:
  """One workdir, one sweep: refuses a different config or overrides. Keeps the
  experiment file's report declaration, so the report needs only the workdir."""
  findings.check(report)  # a bad claim fails now, not after the sweep has trained
  info = {'config': config_arg, 'overrides': {k: repr(v) for k, v in overrides.items()},
          'report': report}
  old = read_sweep_info(workdir)
  if old and (old['config'], old['overrides']) != (info['config'], info['overrides']):
    raise UserError(
        f'--workdir={workdir!r} holds a sweep of --config={old["config"]} with overrides '
        f'{old["overrides"]}; this is {config_arg} with {info["overrides"]}: use a new '
        '--workdir')
  if old != info:
    files.write_json(os.path.join(workdir, SWEEP_JSON), info)


# -- each point's resolved config ---------------------------------------------------------


def write_point(run_dir: str, overrides: dict[str, Any], config: dict[str, Any]) -> None:
  """RUN_DIR/point.json: the point's overrides and the whole config it runs with."""
  os.makedirs(run_dir, exist_ok=True)
  files.write_json(os.path.join(run_dir, POINT_JSON), {'overrides': overrides, 'config': config})


def recorded_config(run_dir: str) -> dict[str, Any] | None:
  """The config a point ran with: point.json, else (older sweeps) result.json's."""
  for name in (POINT_JSON, 'result.json'):
    try:
      with open(os.path.join(run_dir, name)) as f:
        return json.load(f)['config']
    except (OSError, ValueError, KeyError, TypeError):
      continue
  return None


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """`key old -> new` for each dotted key whose value differs (JSON-compared)."""
  old, new = _flatten(json.loads(json.dumps(old))), _flatten(json.loads(json.dumps(new)))
  return [f'{k} {old.get(k)!r} -> {new.get(k)!r}' for k in sorted(old.keys() | new.keys())
          if old.get(k) != new.get(k)]


def _flatten(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f'{prefix}{key}.'))
    else:
      out[f'{prefix}{key}'] = value
  return out


# -- SLURM job ids --------------------------------------------------------------------------


def read_jobs(workdir: str) -> dict[str, dict[str, Any]]:
  """Point name -> {'job_id': '12_3', 'tasks': 1}, for every point submitted to SLURM."""
  try:
    with open(os.path.join(workdir, JOBS_JSON)) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def write_jobs(workdir: str, jobs: dict[str, dict[str, Any]]) -> None:
  files.write_json(os.path.join(workdir, JOBS_JSON), jobs)
