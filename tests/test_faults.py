"""Bad input and faults, tried as a hostile user would: each ends in one line (exit 2)
or the right result, and nothing the user had is lost or changed.

(Sweep locking and changed points are in test_sweep.py; export paths in test_export.py.)
"""

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from squeezejax import checkpoint, cli, configs, convert, train

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = os.path.join(HERE, '..', 'experiments', 'fashion_mnist.py')
ENV = {**os.environ, 'JAX_NUM_CPU_DEVICES': '2'}


def one_line_error(argv, capsys, *needles):
  """`squeezejax ARGV` exits 2 with one line on stderr containing every needle."""
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert len(err.splitlines()) == 1 and 'Traceback' not in err, err
  for needle in needles:
    assert needle in err, err
  return err


def tree_digest(root) -> dict:
  return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('trained')
  train.train_and_evaluate(configs.load(f'{CONFIG}:test', {'num_devices': 1}), str(workdir))
  return workdir


# -- data lost or modified ----------------------------------------------------------------


def test_training_a_workdir_with_another_model_is_refused(trained, tmp_path, capsys):
  workdir = tmp_path / 'w'
  shutil.copytree(trained, workdir)
  before = tree_digest(workdir)
  one_line_error(['train', f'--config={CONFIG}:test', f'--workdir={workdir}',
                  '--config.spec.squeeze_ratio=0.25', '--config.num_devices=1'], capsys,
                 'holds a run of another model', 'squeeze_ratio 0.125 -> 0.25', 'new --workdir')
  one_line_error(['train', f'--config={CONFIG}:test', f'--workdir={workdir}',
                  '--config.dataset=fashion_mnist', '--config.num_devices=1'], capsys,
                 "dataset 'synthetic' -> 'fashion_mnist'")
  assert tree_digest(workdir) == before


def test_finetune_into_its_own_init_directory_is_refused(trained, tmp_path, capsys):
  folder = tmp_path / 'images'
  for name in ('a', 'b'):
    os.makedirs(folder / name)
    for i in range(5):
      from PIL import Image
      Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / name / f'{i}.png')
  before = tree_digest(trained)
  one_line_error(['finetune', f'--init={trained}', f'--data={folder}', '--num_classes=2',
                  f'--workdir={trained}/.'], capsys, 'is the --init model directory')
  assert tree_digest(trained) == before


# -- interrupts ------------------------------------------------------------------------------


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
  cmd = [sys.executable, '-m', 'squeezejax', 'train', f'--config={CONFIG}:test',
         f'--workdir={tmp_path}', '--config.total_steps=100000',
         '--config.checkpoint_every=100000', '--config.num_devices=1']
  proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  while time.time() < deadline and not (tmp_path / 'metrics.jsonl').exists():
    time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert 'KeyboardInterrupt' not in err and 'interrupted at step' in err
  assert 'rerun the same command to resume' in err
  assert checkpoint.saved_steps(str(tmp_path))


def test_two_trainings_and_a_cpu_hog_run_to_the_end(tmp_path):
  """Data parallel over 2 CPU devices on a 2-core machine that is made busier than it
  has cores: the device threads are starved, the runs must still finish."""
  hog = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for _ in range(2)]
  try:
    runs = [subprocess.Popen(
        [sys.executable, '-m', 'squeezejax', 'train', f'--config={CONFIG}:test',
         f'--workdir={tmp_path / str(i)}', '--config.total_steps=60', '--config.log_every=20',
         '--config.checkpoint_every=1000'],
        env={k: v for k, v in ENV.items() if k != 'JAX_NUM_CPU_DEVICES'},  # a device per core
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in runs]
  finally:
    for p in hog:
      p.kill()
  assert [p.returncode for p in runs] == [0, 0], [e[-1500:] for e in errors]
  assert all((tmp_path / str(i) / 'result.json').exists() for i in range(2))


# -- tracebacks where a line belongs --------------------------------------------------------


@pytest.mark.parametrize('source,needles', [
    ('def get_config(arg=None):\n  return (\n', ['syntax error at line']),
    ('import no_such_module_here\n', ['failed to load', 'ModuleNotFoundError', 'line 1']),
    ('def get_config(arg=None):\n  return None\n', ['returned a NoneType']),
    ('def get_config(arg=None):\n  return {"lr": 0.1}\n', ['returned a dict']),
    ('from squeezejax.configs import base_config\ndef get_config(arg=None):\n'
     '  c = base_config()\n  c.lr = "fast"\n  return c\n', ['TypeError at line 4']),
    ('import ml_collections\ndef get_config(arg=None):\n'
     '  return ml_collections.ConfigDict({"lr": 0.1})\n', ['start it from']),
])
def test_broken_config_files(tmp_path, capsys, source, needles):
  path = tmp_path / 'experiment.py'
  path.write_text(source)
  one_line_error(['train', f'--config={path}', f'--workdir={tmp_path / "w"}'], capsys, *needles)
  assert not (tmp_path / 'w').exists()


@pytest.mark.parametrize('override,needle', [
    ('momentum=-0.9', 'config.momentum=-0.9'),
    ('warmup_steps=-5', 'config.warmup_steps=-5'),
    ('weight_decay=-1e-4', 'config.weight_decay=-0.0001'),
    ('augment=mixup', "config.augment='mixup'"),
    ('dataset=mnist', "unknown dataset 'mnist'"),
    ('grad_clip=-1', 'config.grad_clip=-1.0'),
    ('eval_every=-1', 'config.eval_every=-1'),
    ('process_id=3', 'config.process_id=3'),
])
def test_every_field_is_checked_before_the_workdir_is_touched(tmp_path, capsys, override,
                                                               needle):
  one_line_error(['train', f'--config={CONFIG}:test', f'--workdir={tmp_path / "w"}',
                  f'--config.{override}'], capsys, needle)
  assert not (tmp_path / 'w').exists()  # not even model.json


def test_model_json_with_an_unknown_key(trained, tmp_path, capsys):
  workdir = tmp_path / 'm'
  shutil.copytree(trained, workdir)
  text = (workdir / 'model.json').read_text().replace('"layout"', '"layuot"')
  (workdir / 'model.json').write_text(text)
  one_line_error(['predict', f'--checkpoint={workdir}', __file__], capsys,
                 'not a readable model.json', 'layuot')


def test_eval_refuses_network_overrides_it_would_ignore(trained, capsys):
  one_line_error(['eval', f'--config={CONFIG}:test', f'--workdir={trained}',
                  '--config.spec.squeeze_ratio=0.5'], capsys,
                 '--config.spec.squeeze_ratio', 'uses the network in')


def test_output_paths_are_checked_before_any_work(tmp_path, capsys):
  (tmp_path / 'file').write_text('x')
  weights = tmp_path / 'w.npz'
  np.savez(weights, x=np.zeros(1))
  one_line_error(['convert', f'--from={weights}', f'--out={tmp_path / "file"}'], capsys,
                 'is a file: expected a directory')
  one_line_error(['bench', f'--json={tmp_path / "missing" / "b.json"}'], capsys,
                 'does not exist')
  one_line_error(['bench', f'--json={tmp_path}'], capsys, 'is a directory')


def test_predict_gives_an_unreadable_image_its_own_line(trained, tmp_path, capsys):
  from PIL import Image
  good = tmp_path / 'good.png'
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(good)
  broken = tmp_path / 'broken.png'  # a bad IHDR checksum: PIL raises SyntaxError
  data = bytearray(good.read_bytes())
  data[29] ^= 0xFF
  broken.write_bytes(bytes(data))
  assert cli.main(['predict', f'--checkpoint={trained}', str(broken), str(good)]) == 1
  out, err = capsys.readouterr()
  assert str(good) in out and f'{broken}: error: not a readable image' in err
  assert 'Traceback' not in err


# -- silently wrong -----------------------------------------------------------------------


@pytest.mark.parametrize('dtype', [np.int8, np.bool_, np.complex64])
def test_convert_refuses_weights_that_are_not_floats(dtype):
  spec = convert.torchvision_spec('1_1', 10)
  state_dict = {k: np.zeros(s, np.float32) for k, s in convert.torch_shapes(spec).items()}
  state_dict['features.3.squeeze.weight'] = state_dict['features.3.squeeze.weight'].astype(dtype)
  with pytest.raises(configs.UserError, match='features.3.squeeze.weight has dtype'):
    convert.from_torchvision(state_dict)
