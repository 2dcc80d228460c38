"""Runs bad inputs against every command, as a hostile new user would, and writes the table
of docs/reliability.md: each case's command, exit status and the last line it printed.

  .venv/bin/python scripts/hostile_user.py > docs/reliability_cases.md

Every case must end in exit status 2 with one line naming the bad value (or in the
right result, noted as such); the script exits 1 if one prints a traceback. It works in
a temporary directory: a tiny trained model, a few images and weight files.
"""

import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST = f'{ROOT}/experiments/fashion_mnist.py:test'
QUICK = f'{ROOT}/experiments/fashion_mnist.py:quick'
FIG3A = f'{ROOT}/experiments/fig3a_squeeze_ratio.py:test'


def run(args, cwd, extra_env=None):
  env = {**os.environ, 'JAX_NUM_CPU_DEVICES': '1', **(extra_env or {})}
  out = subprocess.run([sys.executable, '-m', 'squeezejax', *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=900)
  return out.returncode, out.stdout, out.stderr


def fixtures(d):
  code, _, err = run(['train', f'--config={TEST}', f'--workdir={d}/model'], d)
  assert code == 0, err
  for name in ('a', 'b'):
    os.makedirs(f'{d}/images/{name}')
    for i in range(5):
      Image.fromarray(np.full((16, 16, 3), 50 * i, np.uint8)).save(f'{d}/images/{name}/{i}.png')
  os.makedirs(f'{d}/one_class/a')
  for i in range(5):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(f'{d}/one_class/a/{i}.png')
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(f'{d}/ok.png')
  with open(f'{d}/notes.txt', 'w') as f:
    f.write('not an image\n')
  with open(f'{d}/truncated.pth', 'wb') as f:
    f.write(b'PK\x03\x04 not a zip')
  np.savez(f'{d}/wrong_keys.npz', weight=np.zeros(3, np.float32))
  with open(f'{d}/a_file', 'w') as f:
    f.write('x')
  with open(f'{d}/bad_syntax.py', 'w') as f:
    f.write('def get_config(arg=None):\n  return (\n')
  with open(f'{d}/returns_dict.py', 'w') as f:
    f.write('def get_config(arg=None):\n  return {"lr": 0.1}\n')


CASES = [  # (what, argv[, environment]); {d} is the temporary directory
    ('unknown command', ['frobnicate']),
    ('unknown preset', ['summary', '--model=resnet50']),
    ('squeeze ratio not a number', ['summary', '--squeeze_ratio=abc']),
    ('share of 3x3 filters above 1', ['summary', '--pct_3x3=1.5']),
    ('image too small for v1.0', ['summary', '--image_size=5']),
    ('simple bypass with freq=1', ['summary', '--bypass=simple', '--freq=1']),
    ('a boolean that is not one', ['summary', '--conv10_relu=maybe']),
    ('train without flags', ['train']),
    ('config file missing', ['train', '--config=missing.py', '--workdir={d}/w']),
    ('unknown preset of a config', ['train', f'--config={TEST[:-5]}:nope', '--workdir={d}/w']),
    ('config with a syntax error', ['train', '--config={d}/bad_syntax.py', '--workdir={d}/w']),
    ('get_config returns a dict', ['train', '--config={d}/returns_dict.py', '--workdir={d}/w']),
    ('unknown config key', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.lrate=1']),
    ('learning rate 0', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.lr=0']),
    ('negative momentum', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.momentum=-1']),
    ('momentum above 1', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.momentum=1.5']),
    ('negative warm-up', ['train', f'--config={TEST}', '--workdir={d}/w',
                          '--config.warmup_steps=-10']),
    ('batch size 0', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.batch_size=0']),
    ('negative epochs', ['train', f'--config={QUICK}', '--workdir={d}/w', '--config.num_epochs=-1']),
    ('fractional steps', ['train', f'--config={TEST}', '--workdir={d}/w',
                          '--config.total_steps=1.5']),
    ('both durations', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.total_steps=5',
                        '--config.num_epochs=1']),
    ('squeeze ratio 2', ['train', f'--config={TEST}', '--workdir={d}/w',
                         '--config.spec.squeeze_ratio=2']),
    ('unknown bypass', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.spec.bypass=wide']),
    ('unknown model', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.model=resnet50']),
    ('num_classes is the dataset\'s', ['train', f'--config={TEST}', '--workdir={d}/w',
                                       '--config.spec.num_classes=3']),
    ('negative image size', ['train', f'--config={TEST}', '--workdir={d}/w',
                             '--config.image_size=-1']),
    ('unknown dtype', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.dtype=float16']),
    ('seed not a number', ['train', f'--config={TEST}', '--workdir={d}/w', '--config.seed=abc']),
    ('unknown augmentation', ['train', f'--config={TEST}', '--workdir={d}/w',
                              '--config.augment=mixup']),
    ('folder that does not exist', ['train', f'--config={TEST}', '--workdir={d}/w',
                                    '--config.dataset=folder:{d}/nowhere']),
    ('split the dataset lacks', ['train', f'--config={TEST}', '--workdir={d}/w',
                                 '--config.eval_split=validation']),
    ('more devices than there are', ['train', f'--config={TEST}', '--workdir={d}/w2',
                                     '--config.num_devices=2']),
    ('batch that does not divide the devices', ['train', f'--config={TEST}', '--workdir={d}/w3',
                                                '--config.batch_size=33'], {'JAX_NUM_CPU_DEVICES': '2'}),
    ('workdir is a file', ['train', f'--config={TEST}', '--workdir={d}/a_file']),
    ('resume a workdir with another network', ['train', f'--config={TEST}', '--workdir={d}/model',
                                               '--config.spec.squeeze_ratio=0.25']),
    ('eval of a directory without a model', ['eval', f'--config={TEST}', '--workdir={d}/images']),
    ('eval with a network override', ['eval', f'--config={TEST}', '--workdir={d}/model',
                                      '--config.spec.base_e=64']),
    ('predict from a non-model directory', ['predict', '--checkpoint={d}/images', '{d}/ok.png']),
    ('predict top_k 0', ['predict', '--checkpoint={d}/model', '--top_k=0', '{d}/ok.png']),
    ('predict: a missing and a text file among good ones',
     ['predict', '--checkpoint={d}/model', '{d}/missing.png', '{d}/notes.txt', '{d}/ok.png']),
    ('convert a missing file', ['convert', '--from={d}/missing.pth', '--out={d}/c']),
    ('convert an unknown file type', ['convert', '--from={d}/notes.txt', '--out={d}/c']),
    ('convert a corrupt .pth', ['convert', '--from={d}/truncated.pth', '--out={d}/c']),
    ('convert a state_dict of something else', ['convert', '--from={d}/wrong_keys.npz',
                                                '--out={d}/c']),
    ('convert onto a file', ['convert', '--from={d}/wrong_keys.npz', '--out={d}/a_file']),
    ('convert into an existing model', ['convert', '--from={d}/wrong_keys.npz', '--out={d}/model']),
    ('export to an unknown format', ['export', '--checkpoint={d}/model', '--format=zip',
                                     '--out={d}/m.zip']),
    ('export a missing model', ['export', '--checkpoint={d}/nowhere', '--out={d}/m.tflite']),
    ('export into a missing directory', ['export', '--checkpoint={d}/model', '--format=stablehlo',
                                         '--out={d}/no/such/dir/m.bin']),
    ('finetune with the wrong class count', ['finetune', '--init={d}/model', '--data={d}/images',
                                             '--num_classes=3', '--workdir={d}/ft']),
    ('finetune 0 steps', ['finetune', '--init={d}/model', '--data={d}/images', '--num_classes=2',
                          '--steps=0', '--workdir={d}/ft']),
    ('finetune on one class', ['finetune', '--init={d}/model', '--data={d}/one_class',
                               '--num_classes=1', '--workdir={d}/ft']),
    ('finetune into its own init model', ['finetune', '--init={d}/model', '--data={d}/images',
                                          '--num_classes=2', '--workdir={d}/model']),
    ('sweep a file without get_sweep', ['sweep', f'--config={TEST}', '--workdir={d}/s']),
    ('sweep 0 seeds', ['sweep', f'--config={FIG3A}', '--workdir={d}/s', '--seeds=0']),
    ('sweep with an unknown executor', ['sweep', f'--config={FIG3A}', '--workdir={d}/s',
                                        '--executor=cloud']),
    ('sweep 0 in parallel', ['sweep', f'--config={FIG3A}', '--workdir={d}/s', '--parallel=0']),
    ('report of a directory without results', ['report', '--workdir={d}/images']),
    ('bench 0 windows', ['bench', '--windows=0']),
    ('bench an unknown model', ['bench', '--model=resnet50']),
    ('bench JSON into a missing directory', ['bench', '--json={d}/no/such/b.json']),
    ('bench against an unknown framework', ['bench', '--compare=tensorflow']),
]


def main():
  failures = 0
  with tempfile.TemporaryDirectory() as d:
    fixtures(d)
    print('| # | case | command | exit | last line printed |')
    print('|--:|---|---|--:|---|')
    for i, (what, argv, *env) in enumerate(CASES, 1):
      argv = [a.replace('{d}', d) for a in argv]
      code, out, err = run(argv, d, *env)
      text = (err.strip() or out.strip()).splitlines()
      last = text[-1] if text else ''
      if 'Traceback' in err:
        failures += 1
        last = 'TRACEBACK: ' + last
      shown = ' '.join(a.replace(d, 'TMP').replace(ROOT + '/', '') for a in argv)
      last = last.replace(d, 'TMP').replace(ROOT + '/', '').replace('|', '\\|')
      print(f'| {i} | {what} | `squeezejax {shown}` | {code} | {last} |', flush=True)
  sys.exit(1 if failures else 0)


if __name__ == '__main__':
  main()
