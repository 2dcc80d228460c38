"""`convert` of the authors' Deep Compression SqueezeNet (ImageNet-trained Caffe v1.0) and
`predict` on a photograph, against a decoder and a Caffe forward pass written here in
numpy and torch (not the project's code)."""

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip('torch')
import torch.nn.functional as F  # noqa: E402

from squeezejax import cli, checkpoint, predict  # noqa: E402

NET = os.path.join(os.path.dirname(__file__), 'data', 'deep_compression',
                   'compressed_SqueezeNet.net')
FIRES = [(16, 64), (16, 64), (32, 128), (32, 128), (48, 192), (48, 192), (64, 256), (64, 256)]


def photograph() -> str:
  import matplotlib.cbook  # a real photograph shipped with matplotlib
  return matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)


def caffe_layers():
  """(OIHW shape, pad) of Caffe SqueezeNet v1.0's 26 convolutions, prototxt order."""
  shapes, c = [((96, 3, 7, 7), 0)], 96
  for s, e in FIRES:
    shapes += [((s, c, 1, 1), 0), ((e, s, 1, 1), 0), ((e, s, 3, 3), 1)]
    c = 2 * e
  return shapes + [((1000, c, 1, 1), 1)]  # conv10: pad 1 in the prototxt


def decode(path):
  raw = open(path, 'rb').read()
  counts = np.frombuffer(raw[:104], np.uint32)
  offset, blobs = 104, []
  for n, (shape, _) in zip(counts, caffe_layers()):
    n = int(n)
    codebook = np.frombuffer(raw, np.float32, 256, offset)
    bias = np.frombuffer(raw, np.float32, shape[0], offset + 1024)
    offset += 1024 + 4 * shape[0]
    codes = np.frombuffer(raw, np.uint8, n, offset)
    nibbles = np.frombuffer(raw, np.uint8, (n + 1) // 2, offset + n)
    offset += n + (n + 1) // 2
    gaps = np.stack([nibbles & 15, nibbles >> 4], 1).ravel()[:n]
    w = np.zeros(int(np.prod(shape)), np.float32)
    w[np.cumsum(gaps.astype(np.int64) + 1) - 1] = codebook[codes]
    blobs.append((torch.from_numpy(w.reshape(shape)), torch.from_numpy(bias.copy())))
  assert offset == len(raw)
  return blobs


def caffe_forward(blobs, x: np.ndarray, conv10_pad: int = 1) -> np.ndarray:
  """SqueezeNet v1.0 as its deploy prototxt: NCHW, ceil-mode pools after conv1, fire4,
  fire8; fire concat 1x1 first; conv10 -> ReLU -> global average."""
  pads = [p for _, p in caffe_layers()]
  pads[-1] = conv10_pad
  conv = lambda h, i, stride=1: F.relu(F.conv2d(h, *blobs[i], stride=stride, padding=pads[i]))
  pool = lambda h: F.max_pool2d(h, 3, 2, ceil_mode=True)
  h = pool(conv(torch.from_numpy(x).permute(0, 3, 1, 2), 0, 2))
  for f in range(8):
    s = conv(h, 1 + 3 * f)
    h = torch.cat([conv(s, 2 + 3 * f), conv(s, 3 + 3 * f)], 1)
    if f in (2, 6):
      h = pool(h)
  with torch.no_grad():
    return conv(h, 25).mean((2, 3)).numpy()


def caffe_image(path) -> np.ndarray:
  from PIL import Image
  image = np.asarray(Image.open(path).convert('RGB').resize((256, 256), Image.BILINEAR),
                     np.float32)
  return (image[14:241, 14:241, ::-1] - np.array([104, 117, 123], np.float32))[None]


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  out = str(tmp_path_factory.mktemp('dc') / 'model')
  assert cli.main(['convert', f'--from={NET}', f'--out={out}']) == 0
  return out


def test_convert_records_caffe_preprocessing_and_imagenet_classes(converted):
  with open(os.path.join(converted, 'model.json')) as f:
    model = json.load(f)
  assert model['spec']['conv10_pad'] == 1 and model['spec']['layout'] == 'v1.0'
  pre = model['meta']['preprocessing']
  assert pre['kind'] == 'caffe' and pre['image_size'] == 227
  assert pre['mean_bgr'] == [104.0, 117.0, 123.0]
  names, synsets = model['meta']['class_names'], model['meta']['synsets']
  assert len(names) == len(synsets) == 1000 == len(set(synsets))
  assert (synsets[0], names[0]) == ('n01440764', 'tench, Tinca tinca')
  assert synsets == sorted(synsets)  # Caffe's synset_words.txt order
  with open(NET, 'rb') as a, open(os.path.join(converted, 'model.net'), 'rb') as b:
    assert a.read() == b.read()


def test_logits_match_an_independent_caffe_forward(converted):
  spec, params, meta = checkpoint.load_model(converted)
  x = caffe_image(photograph())
  ours_input = predict.load_image(photograph(), meta['preprocessing'])[None]
  np.testing.assert_allclose(ours_input, x, atol=1e-4)
  blobs = decode(NET)
  expected = caffe_forward(blobs, x)
  got = predict.logits(spec, params, x)
  scale = np.abs(expected).max()
  np.testing.assert_allclose(got, expected, atol=2e-4 * scale)
  # The pad matters: without it the logits are another network's.
  unpadded = caffe_forward(blobs, x, conv10_pad=0)
  assert np.abs(unpadded - expected).max() > 100 * 2e-4 * scale


def test_predict_names_imagenet_classes(converted, capsys):
  assert cli.main(['predict', f'--checkpoint={converted}', '--top_k=3', photograph()]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  expected = caffe_forward(decode(NET), caffe_image(photograph()))[0]
  probs = np.exp(expected - expected.max())
  probs /= probs.sum()
  names = json.load(open(os.path.join(converted, 'model.json')))['meta']['class_names']
  for line, i in zip(lines[1:], np.argsort(-probs)[:3]):
    prob, name = line.split(None, 1)
    assert name == names[i] and abs(float(prob) - probs[i]) < 1e-3


@pytest.mark.parametrize('damage', ['truncated', 'foreign'])
def test_bad_net_file_exit_2_nothing_written(tmp_path, capsys, damage):
  raw = open(NET, 'rb').read()
  bad = tmp_path / 'bad.net'
  bad.write_bytes(raw[:-100] if damage == 'truncated' else b'GIF89a' + bytes(4096))
  out = tmp_path / 'out'
  assert cli.main(['convert', f'--from={bad}', f'--out={out}']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'Deep Compression' in err[0]
  assert not out.exists()
