"""What a sweep directory holds: `results.jsonl` (one line per run) and `sweep.json`.

The results file is a sweep's only state (pycls: analyse runs by their
metaparameters). Each line is written whole or not at all (`files.append_line`);
a line cut by a kill, or an older line of a retried point, is dropped when the
file is read. `sweep.json` names the sweep (its config and overrides: one workdir
holds one sweep) and holds the experiment file's report declaration, so the report
needs nothing else. The sweep writes both; the report only reads them.
"""

from __future__ import annotations

import json
import os
from typing import Any

from squeezejax import configs
from squeezejax import files
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

RESULTS = 'results.jsonl'
SWEEP_JSON = 'sweep.json'
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
  record.update({k: spec.get(k) for k in spec_lib.METAPARAMETERS})
  record.update({k: result.get(k) for k in METRICS})
  return record


def failed_record(name: str, overrides: dict[str, Any], config, error: str) -> dict[str, Any]:
  """A line for a run that failed: the metaparameters its config asked for (the
  config.model preset under any set config.spec field), if the config loads."""
  record = {'name': name, 'status': 'failed', 'run_dir': name, 'seed': overrides.get('seed'),
            'overrides': overrides, 'error': error}
  if config is not None:
    fields = configs.spec_fields(config)
    record.update({k: fields.get(k) for k in spec_lib.METAPARAMETERS})
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
