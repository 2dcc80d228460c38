"""Export: the TFLite / jax.export artefacts compute the same logits as JAX."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from squeezejax import cli
from squeezejax import convert
from squeezejax import export
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

SIZE = 48


@pytest.fixture(scope='module')
def tiny():
  """A narrow v1.1 network with random weights and biases (logits well away from 0)."""
  spec = spec_lib.preset('squeezenet1_1', base_e=16, incr_e=16, num_classes=6,
                         conv10_relu=False)
  rng = np.random.default_rng(0)
  shapes = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: model_lib.create(spec)), nnx.Param))
  params = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.3).astype(np.float32), shapes)
  meta = {'preprocessing': {'kind': 'dataset', 'mean': [0.5] * 3, 'std': [0.25] * 3,
                            'image_size': SIZE},
          'class_names': [f'c{i}' for i in range(6)]}
  return spec, params, meta


@pytest.mark.parametrize('fmt,quantize,tolerance', [
    ('tflite', 'none', 1e-4), ('tflite', 'int8', 0.05), ('stablehlo', 'none', 1e-5)])
def test_export_matches_jax(tiny, tmp_path, fmt, quantize, tolerance):
  spec, params, meta = tiny
  out = str(tmp_path / f'model.{fmt}')
  result = export.export(spec, params, meta, out, format=fmt, quantize=quantize)
  assert os.path.getsize(out) == result['bytes']
  assert result['input_shape'] == [SIZE, SIZE, 3]
  # Independent check on other images (TFLite: one per call; StableHLO: any batch).
  images = np.random.default_rng(1).standard_normal((3, SIZE, SIZE, 3)).astype(np.float32)
  expected = np.asarray(model_lib.from_params(spec, params)(images))
  got = (export.run_tflite(out, images) if fmt == 'tflite'
         else export.run_stablehlo(open(out, 'rb').read(), images))
  assert got.shape == (3, 6)
  scale = np.abs(expected).max()
  assert scale > 0.1
  np.testing.assert_allclose(got, expected, atol=tolerance * scale, rtol=0)
  assert result['max_abs_diff'] <= tolerance * result['max_abs_logit']
  sidecar = json.load(open(out + '.json'))
  assert sidecar['input'] == [1 if fmt == 'tflite' else 'batch', SIZE, SIZE, 3]
  assert sidecar['preprocessing'] == meta['preprocessing']
  assert sidecar['class_names'] == meta['class_names']


def test_quantized_files_are_smaller(tiny, tmp_path):
  spec, params, meta = tiny
  sizes = {q: export.export(spec, params, meta, str(tmp_path / f'{q}.tflite'),
                            quantize=q, check_batch=1)['bytes']
           for q in ('none', 'float16')}
  params_bytes = spec.cost()['params'] * 4
  assert 0.9 * params_bytes < sizes['none'] < 1.5 * params_bytes + 20_000
  # float16 halves the weights (4.73 -> 2.38 MiB for squeezenet1_1); on this tiny
  # network the graph and the added dequantize ops take a larger share.
  assert sizes['none'] - sizes['float16'] > 0.3 * params_bytes


def test_bad_flags(tiny, tmp_path):
  spec, params, meta = tiny
  for kwargs, match in [
      (dict(format='onnx'), r"--format='onnx' is not allowed: expected one of tflite, stablehlo"),
      (dict(quantize='int4'), r"--quantize='int4' is not allowed"),
      (dict(format='stablehlo', quantize='int8'), 'only for --format=tflite'),
      (dict(image_size=5), r'image_size=5 is too small'),
  ]:
    with pytest.raises(UserError, match=match):
      export.export(spec, params, meta, str(tmp_path / 'x'), **kwargs)


def test_cli_convert_then_export(tmp_path, capsys):
  """torchvision .pth -> convert -> model directory -> export -> TFLite file."""
  torch = pytest.importorskip('torch')
  from squeezejax import torch_reference
  torch.manual_seed(0)
  module = torch_reference.squeezenet('1_1', 1000)
  torch.save(module.state_dict(), str(tmp_path / 'sq11.pth'))
  model_dir = str(tmp_path / 'sq11')
  assert cli.main(['convert', f'--from={tmp_path / "sq11.pth"}', f'--out={model_dir}']) == 0
  out = str(tmp_path / 'sq11.tflite')
  assert cli.main(['export', f'--checkpoint={model_dir}', '--format=tflite',
                   f'--out={out}']) == 0
  printed = capsys.readouterr().out
  assert 'the paper\'s SqueezeNet: 4.8MB' in printed and 'top-1 agreement 100%' in printed
  # 1,235,496 float32 parameters = 4.71 MiB, plus the graph.
  assert 4.70 * 2**20 < os.path.getsize(out) < 4.80 * 2**20
  # The exported model against PyTorch itself, on torchvision-normalised inputs.
  images = np.random.default_rng(2).standard_normal((1, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    expected = module.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  np.testing.assert_allclose(export.run_tflite(out, images), expected,
                             atol=1e-4 * np.abs(expected).max(), rtol=0)
  assert cli.main(['export', f'--checkpoint={model_dir}', '--format=onnx',
                   f'--out={out}']) == 2
  assert "--format='onnx' is not allowed" in capsys.readouterr().err
