"""Export: every format, run in its own runtime (LiteRT, onnxruntime, JAX), computes
JAX's logits; the full-integer model is integer throughout; bad input is one line."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from squeezejax import cli
from squeezejax import data
from squeezejax import edge
from squeezejax import export
from squeezejax import model as model_lib
from squeezejax import spec as spec_lib
from squeezejax.errors import UserError

SIZE = 48


def random_params(spec, seed=0):
  """Random weights and biases (logits well away from 0)."""
  rng = np.random.default_rng(seed)
  shapes = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: model_lib.create(spec)), nnx.Param))
  return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.3).astype(np.float32), shapes)


@pytest.fixture(scope='module')
def tiny():
  """A narrow v1.1 network at 48 px."""
  spec = spec_lib.preset('squeezenet1_1', base_e=16, incr_e=16, num_classes=6,
                         conv10_relu=False)
  meta = {'preprocessing': {'kind': 'dataset', 'mean': [0.5] * 3, 'std': [0.25] * 3,
                            'image_size': SIZE},
          'class_names': [f'c{i}' for i in range(6)]}
  return spec, random_params(spec), meta


@pytest.fixture(scope='module')
def small28(tmp_path_factory):
  """The small layout at 28 px, where every pool's ceil mode matters (28 -> 14 -> 7 -> 3;
  floor mode would give 13 -> 6 -> 2), on synthetic data, with every format written and
  measured by `export.report`."""
  spec = spec_lib.preset('squeezenet_small', base_e=16, incr_e=16, conv10_relu=False)
  assert [c.output[:2] for c in spec.layers(28) if c.kind == 'pool'] == [(14, 14), (7, 7),
                                                                          (3, 3)]
  params = random_params(spec, seed=1)
  stats = data.load_arrays('synthetic', 'train')
  meta = {'preprocessing': {'kind': 'dataset', 'mean': list(stats.mean), 'std': list(stats.std),
                            'image_size': 28},
          'class_names': list(stats.class_names), 'dataset': 'synthetic'}
  out = tmp_path_factory.mktemp('edge') / 'report'
  rows = export.report(spec, params, meta, str(out), runs=5, warmup=1, calibration=64)
  images, labels = edge.split_images('synthetic', 'test', meta['preprocessing'])
  return spec, params, meta, out, rows, images, labels


def test_report_rows(small28):
  spec, _, _, out, rows, _, _ = small28
  assert [r['file'] for r in rows] == [f for _, _, f, _ in export.REPORT_FILES]
  report = json.load(open(out / 'report.json'))
  assert report['reference']['eval_examples'] == 300 and report['rows'] == rows
  table = open(out / 'report.md').read()
  assert table.count('\n| ') == len(rows) + 1 and 'TFLite full integer int8' in table
  for r in rows:
    assert r['bytes'] == os.path.getsize(out / r['file'])
    assert r['eval_examples'] == 300 and r['runs'] == 5 and r['threads'] == 1
    assert 0 < r['latency_ms_median'] <= r['latency_ms_p90']
    assert r['peak_rss_mib'] is None or r['peak_rss_mib'] >= 0
    if r['format'] in ('stablehlo', 'onnx') or r['quantize'] == 'none':
      assert r['agreement'] == 1.0 and r['top1_delta'] == 0.0, r  # float32 throughout
  size = {r['file']: r['bytes'] for r in rows}
  params_bytes = spec.cost(28)['params'] * 4
  # Weights at 2 and 1 byte; on a network this small the graph and the per-channel
  # quantization parameters take a large share of the file.
  assert size['model_float32.tflite'] - size['model_float16.tflite'] > 0.3 * params_bytes
  assert size['model_float32.tflite'] - size['model_int8.tflite'] > 0.4 * params_bytes


@pytest.mark.parametrize('name,tolerance', [
    ('model.stablehlo', 1e-5), ('model_float32.tflite', 1e-4), ('model.onnx', 1e-4),
    ('model_float16.tflite', 0.01), ('model_dynamic_int8.tflite', 0.05),
    ('model_int8.tflite', 0.1)])
def test_files_match_jax_at_28px(small28, name, tolerance):
  """Each file in its runtime, on test images (in the calibrated range), against JAX."""
  spec, params, _, out, _, images, _ = small28
  fmt = json.load(open(out / f'{name}.json'))['format']
  images = images[:8]
  expected = np.asarray(model_lib.from_params(spec, params)(images))
  got = edge.logits(edge.load(str(out / name), fmt), images, fmt)
  scale = np.abs(expected).max()
  assert got.shape == (8, 10) and scale > 0.1
  np.testing.assert_allclose(got, expected, atol=tolerance * scale, rtol=0)
  if tolerance < 0.1:
    assert (got.argmax(-1) == expected.argmax(-1)).all()


def test_full_integer_model(small28):
  _, _, _, out, _, images, _ = small28
  path = str(out / 'model_int8.tflite')
  assert edge.float_tensors(path) == []  # int8 activations and weights, int32 biases only
  assert edge.float_tensors(str(out / 'model_dynamic_int8.tflite'))  # the check sees floats
  it = edge.interpreter(path, delegates=False)
  it.allocate_tensors()
  (inp,), (outp,) = it.get_input_details(), it.get_output_details()
  assert inp['dtype'] == np.int8 and outp['dtype'] == np.int8
  scale, zero_point = inp['quantization']
  assert scale > 0
  sidecar = json.load(open(path + '.json'))
  assert sidecar['input_dtype'] == 'int8'
  assert sidecar['quantization']['input'] == {'scale': scale, 'zero_point': zero_point}
  assert sidecar['quantization']['calibration'] == {'dataset': 'synthetic', 'split': 'train',
                                                    'images': 64}
  # The input is quantized with the interpreter's scale and zero point, rounded, saturated.
  x = np.array([0.0, 2.4 * scale, -1e6, 1e6], np.float32)
  np.testing.assert_array_equal(edge.quantize(x, inp),
                                np.array([zero_point, zero_point + 2, -128, 127], np.int8))
  run = edge.interpreter(path)  # with XNNPACK, as run_tflite (its int8 rounding differs by 1)
  run.allocate_tensors()
  run.set_tensor(inp['index'], edge.quantize(images[:1], inp))
  run.invoke()
  q = run.get_tensor(outp['index'])
  by_hand = (q.astype(np.float32) - outp['quantization'][1]) * outp['quantization'][0]
  np.testing.assert_array_equal(export.run_tflite(path, images[:1]), by_hand)
  # Weights: int8, zero point 0, one scale per output channel.
  details = {t['index']: t for t in it.get_tensor_details()}
  weighted = [op for op in it._get_ops_details()  # pylint: disable=protected-access
              if op['op_name'] in ('CONV_2D', 'DEPTHWISE_CONV_2D', 'FULLY_CONNECTED')]
  assert len(weighted) == 26  # conv1, 8 x (squeeze, expand1x1, expand3x3), conv10
  for op in weighted:
    w, b = details[op['inputs'][1]], details[op['inputs'][2]]
    q = w['quantization_parameters']
    channels = w['shape'][q['quantized_dimension']]
    assert w['dtype'] == np.int8 and b['dtype'] == np.int32
    assert len(q['scales']) == channels > 1 and not q['zero_points'].any()


def test_onnx_graph(small28):
  import onnx
  _, _, _, out, _, _, _ = small28
  model = onnx.load(str(out / 'model.onnx'))
  dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
  assert dims == [1, 3, 28, 28]  # torchvision's NCHW
  assert json.load(open(out / 'model.onnx.json'))['layout'] == 'NCHW'
  assert {n.op_type for n in model.graph.node} <= {
      'Conv', 'MatMul', 'Add', 'Relu', 'Slice', 'Max', 'Pad', 'Concat', 'Transpose', 'Reshape',
      'ReduceSum', 'ReduceMean', 'Mul', 'Identity'}


def test_evaluate_file_and_cli(small28, capsys):
  spec, params, _, out, rows, images, labels = small28
  expected = np.asarray(model_lib.from_params(spec, params)(images))
  for name in ('model_float32.tflite', 'model_int8.tflite', 'model.onnx', 'model.stablehlo'):
    result = edge.evaluate_file(str(out / name))
    row = next(r for r in rows if r['file'] == name)
    assert result['eval_examples'] == 300 and result['dataset'] == 'synthetic'
    assert result['top1'] == row['top1'] and result['format'] == row['format']
    if name != 'model_int8.tflite':
      assert result['top1'] == float((expected.argmax(-1) == labels).mean())
  assert cli.main(['eval', f'--model={out / "model.onnx"}']) == 0
  printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert printed['runtime'].startswith('onnxruntime') and printed['eval_examples'] == 300


def test_export_matches_jax_v11(tiny, tmp_path):
  """The v1.1 layout (stride-2 conv1) at 48 px through TFLite and ONNX, on random inputs."""
  spec, params, meta = tiny
  images = np.random.default_rng(1).standard_normal((3, SIZE, SIZE, 3)).astype(np.float32)
  expected = np.asarray(model_lib.from_params(spec, params)(images))
  for fmt in ('tflite', 'onnx'):
    out = str(tmp_path / f'model.{fmt}')
    result = export.export(spec, params, meta, out, format=fmt)
    assert os.path.getsize(out) == result['bytes'] and result['input_shape'] == [SIZE, SIZE, 3]
    assert result['max_abs_diff'] <= 1e-4 * result['max_abs_logit']
    got = export.run_tflite(out, images) if fmt == 'tflite' else export.run_onnx(out, images)
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)
    sidecar = json.load(open(out + '.json'))
    assert sidecar['input'] == [1, SIZE, SIZE, 3]
    assert sidecar['preprocessing'] == meta['preprocessing']
    assert sidecar['class_names'] == meta['class_names']


def test_bad_input_is_one_line_before_work(tiny, tmp_path, monkeypatch):
  spec, params, meta = tiny
  monkeypatch.setattr(export, 'logits_fn', lambda *a: pytest.fail('work started'))
  for kwargs, match in [
      (dict(format='coreml'), r"--format='coreml' is not allowed: expected one of tflite, "
       'tflite-int8, onnx, stablehlo'),
      (dict(quantize='int4'), r"--quantize='int4' is not allowed"),
      (dict(format='stablehlo', quantize='int8'), 'only for --format=tflite'),
      (dict(format='tflite-int8'), 'records no training dataset: pass --representative'),
      (dict(format='tflite-int8', representative='imagenet2012'), 'does not fit in memory'),
      (dict(format='tflite-int8', representative='synthetic', calibration=0), 'calibration=0'),
      (dict(out=str(tmp_path / 'missing' / 'x.tflite')), 'does not exist'),
  ]:
    out = kwargs.pop('out', str(tmp_path / 'x'))
    with pytest.raises(UserError, match=match):
      export.export(spec, params, meta, out, **kwargs)
  with pytest.raises(UserError, match='records none: pass --dataset'):
    export.report(spec, params, meta, str(tmp_path / 'r'))


def test_cli_bad_input(tmp_path, capsys):
  for argv, match in [
      (['export', '--checkpoint=x', '--format=coreml', '--out=y'], "--format='coreml'"),
      (['export', '--checkpoint=x', f'--out={tmp_path}/no/y.onnx'], 'does not exist'),
      (['eval', f'--model={tmp_path}/none.tflite'], 'no such file'),
  ]:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert match in err and err.count('\n') == 1, err
  (tmp_path / 'bare.tflite').write_bytes(b'\0')
  assert cli.main(['eval', f'--model={tmp_path}/bare.tflite']) == 2
  assert 'has no bare.tflite.json beside it' in capsys.readouterr().err


def test_cli_convert_then_export(tmp_path, capsys):
  """torchvision .pth -> convert -> model directory -> export -> TFLite and ONNX files."""
  torch = pytest.importorskip('torch')
  from squeezejax import torch_reference
  torch.manual_seed(0)
  module = torch_reference.squeezenet('1_1', 1000)
  torch.save(module.state_dict(), str(tmp_path / 'sq11.pth'))
  model_dir = str(tmp_path / 'sq11')
  assert cli.main(['convert', f'--from={tmp_path / "sq11.pth"}', f'--out={model_dir}']) == 0
  images = np.random.default_rng(2).standard_normal((1, 224, 224, 3)).astype(np.float32)
  with torch.no_grad():
    expected = module.eval()(torch.from_numpy(images.transpose(0, 3, 1, 2).copy())).numpy()
  for fmt, run in (('tflite', export.run_tflite), ('onnx', export.run_onnx)):
    out = str(tmp_path / f'sq11.{fmt}')
    assert cli.main(['export', f'--checkpoint={model_dir}', f'--format={fmt}',
                     f'--out={out}']) == 0
    printed = capsys.readouterr().out
    assert 'the paper\'s SqueezeNet: 4.8MB' in printed and 'top-1 agreement 100%' in printed
    # 1,235,496 float32 parameters = 4.71 MiB, plus the graph.
    assert 4.70 * 2**20 < os.path.getsize(out) < 4.80 * 2**20
    # The exported model against PyTorch itself, on torchvision-normalised inputs.
    np.testing.assert_allclose(run(out, images), expected,
                               atol=1e-4 * np.abs(expected).max(), rtol=0)
  # An imported model records no training dataset to calibrate on: one line, no work.
  assert cli.main(['export', f'--checkpoint={model_dir}', '--format=tflite-int8',
                   f'--out={tmp_path / "q.tflite"}']) == 2
  assert 'pass --representative=DATASET' in capsys.readouterr().err
