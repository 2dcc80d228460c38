"""The results file under kills, and its records' columns."""

import json
import os

from squeezejax import configs
from squeezejax import results
from squeezejax import spec as spec_lib

FIG3A = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                     'experiments', 'fig3a_squeeze_ratio.py')


def test_results_file_dedups_and_repairs_torn_lines(tmp_path):
  path = str(tmp_path / results.RESULTS)
  results.append(path, {'name': 'a', 'status': 'failed'})
  results.append(path, {'name': 'b', 'status': 'ok'})
  results.append(path, {'name': 'a', 'status': 'ok'})  # a retried point: last wins
  with open(path, 'ab') as f:
    f.write(b'{"name": "c", "sta')  # killed in the middle of a write
  records = results.read(path)
  assert [(r['name'], r['status']) for r in records] == [('b', 'ok'), ('a', 'ok')]
  assert results.repair(path) == records
  results.append(path, {'name': 'c', 'status': 'ok'})
  lines = open(path).read().splitlines()
  assert [json.loads(line)['name'] for line in lines] == ['b', 'a', 'c']
  before = os.stat(path).st_mtime_ns
  results.repair(path)  # a clean file is left alone
  assert os.stat(path).st_mtime_ns == before
  assert results.read(str(tmp_path / 'missing.jsonl')) == []


def test_records_carry_every_metaparameter():
  spec = spec_lib.preset('squeezenet1_1', squeeze_ratio=0.25)
  result = {'spec': spec.to_dict(), 'config': {'dataset': 'imagenet2012'}, **spec.cost(),
            'top1': 0.5, 'top5': 0.8}
  overrides = {'spec.squeeze_ratio': 0.25, 'seed': 3}
  record = results.ok_record('p', 'p', overrides, result)
  assert set(spec_lib.METAPARAMETERS) <= set(record)
  assert (record['layout'], record['squeeze_ratio'], record['seed'], record['status'],
          record['dataset']) == ('v1.1', 0.25, 3, 'ok', 'imagenet2012')
  assert results.ok_record('p/4', 'p', overrides, {**result, 'seed': 4})['seed'] == 4


def test_failed_record_takes_the_preset_under_set_spec_fields():
  """A failed point's columns: the config.model preset, with set config.spec fields on top."""
  config = configs.load(f'{FIG3A}:test', {'model': 'squeezenet1_0_simple'})
  configs.apply_overrides(config, {'spec.squeeze_ratio': 0.0})  # as a sweep point: unchecked
  record = results.failed_record('p', {'seed': 0}, config, 'UserError: squeeze_ratio=0.0')
  assert (record['bypass'], record['layout'], record['squeeze_ratio'], record['base_e']) == (
      'simple', 'v1.0', 0.0, 16)  # base_e: set by the test preset over the preset's 128
  assert record['status'] == 'failed' and record['error'].startswith('UserError')
  bare = results.failed_record('q', {'seed': 1}, None, 'RuntimeError: no config')
  assert bare['seed'] == 1 and 'bypass' not in bare


def test_recorded_config_and_its_changes(tmp_path):
  """point.json wins over result.json (older sweeps); changes are listed by dotted key,
  compared as JSON (a tuple and a list are the same value)."""
  run_dir = str(tmp_path / 'p')
  assert results.recorded_config(run_dir) is None
  os.makedirs(run_dir)
  with open(os.path.join(run_dir, 'result.json'), 'w') as f:
    json.dump({'config': {'lr': 0.1}}, f)
  assert results.recorded_config(run_dir) == {'lr': 0.1}
  config = configs.load(f'{FIG3A}:test').to_dict()
  results.write_point(run_dir, {'seed': 0}, config)
  assert results.recorded_config(run_dir) == json.loads(json.dumps(config))
  changed = configs.load(f'{FIG3A}:test', {'total_steps': 4, 'spec.bypass': 'simple'}).to_dict()
  assert results.config_changes(config, config) == []
  assert results.config_changes(config, changed) == [
      "spec.bypass None -> 'simple'", 'total_steps 8 -> 4']
  assert results.config_changes({'a': (1, 2)}, {'a': [1, 2], 'b': None}) == []
