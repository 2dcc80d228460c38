"""`squeezejax predict`: preprocessing, top-k output, per-file errors."""

import jax
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from squeezejax import checkpoint
from squeezejax import cli
from squeezejax import convert
from squeezejax import model as model_lib
from squeezejax import predict
from squeezejax import spec as spec_lib

PREPROCESSING = {'kind': 'torchvision', 'mean': [0.485, 0.456, 0.406],
                 'std': [0.229, 0.224, 0.225], 'resize': 73, 'image_size': 64}


def random_params(spec, seed=0):
  rng = np.random.default_rng(seed)
  shapes = nnx.to_pure_dict(nnx.state(nnx.eval_shape(lambda: model_lib.create(spec)), nnx.Param))
  return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.2).astype(np.float32), shapes)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  spec = spec_lib.preset('squeezenet1_1', base_e=16, incr_e=16, num_classes=4,
                         conv10_relu=False)
  params = random_params(spec)
  directory = str(tmp_path_factory.mktemp('model'))
  checkpoint.save_model(directory, spec, params, {
      'preprocessing': PREPROCESSING, 'class_names': ['cat', 'dog', 'fox', 'owl']})
  return directory, spec, params


@pytest.fixture(scope='module')
def images(tmp_path_factory):
  folder = tmp_path_factory.mktemp('images')
  rng = np.random.default_rng(0)
  paths = {}
  for name, size, mode in [('wide.png', (120, 90), 'RGB'), ('tall.jpg', (80, 100), 'RGB'),
                           ('gray.png', (90, 90), 'L'), ('alpha.png', (75, 75), 'RGBA')]:
    channels = {'RGB': 3, 'L': 1, 'RGBA': 4}[mode]
    pixels = rng.integers(0, 256, (size[1], size[0], channels), np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(folder / name)
    paths[name] = str(folder / name)
  (folder / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 this is not a jpeg')
  paths['broken.jpg'] = str(folder / 'broken.jpg')
  paths['missing.png'] = str(folder / 'missing.png')
  return paths


def test_preprocess_is_resize_short_side_then_center_crop():
  # A 120x90 image: the short side 90 -> 73, the long 120 -> int(73 * 120 / 90) = 97.
  pixels = np.random.default_rng(1).integers(0, 256, (90, 120, 3), np.uint8)
  x = predict.preprocess(Image.fromarray(pixels), PREPROCESSING)
  resized = np.asarray(Image.fromarray(pixels).resize((97, 73), Image.BILINEAR), np.float32)
  top, left = int(round((73 - 64) / 2)), int(round((97 - 64) / 2))
  expected = (resized[top:top + 64, left:left + 64] / 255 - PREPROCESSING['mean']) / (
      PREPROCESSING['std'])
  assert x.shape == (64, 64, 3) and x.dtype == np.float32
  np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6)
  # Trained models' 'dataset' kind: a plain square resize, grayscale kept 1-channel.
  gray = predict.preprocess(Image.fromarray(pixels[:, :, 0]),
                            {'kind': 'dataset', 'mean': [0.5], 'std': [0.25], 'image_size': 28})
  assert gray.shape == (28, 28, 1)


def test_predict_prints_top_k_and_survives_bad_files(model_dir, images, capsys):
  directory, spec, params = model_dir
  good = ['wide.png', 'tall.jpg', 'gray.png', 'alpha.png']
  argv = ['predict', f'--checkpoint={directory}', '--top_k=3',
          images['wide.png'], images['broken.jpg'], images['tall.jpg'], images['missing.png'],
          images['gray.png'], images['alpha.png']]
  assert cli.main(argv) == 1  # some files failed, the others were still predicted
  captured = capsys.readouterr()
  err = captured.err.splitlines()
  assert any(l.startswith(images['broken.jpg'] + ': error: not a readable image') for l in err)
  assert any(l == images['missing.png'] + ': error: no such file' for l in err)
  assert '2 of 6 image(s) could not be read' in captured.err
  # The printed probabilities are the model's, for the preprocessed images.
  model = model_lib.from_params(spec, params)
  batch = np.stack([predict.load_image(images[n], PREPROCESSING) for n in good])
  probs = np.asarray(jax.nn.softmax(model(batch), axis=-1))
  lines = captured.out.splitlines()
  assert lines[0::4] == [images[n] for n in good]
  for i in range(len(good)):
    shown = [line.split() for line in lines[4 * i + 1:4 * i + 4]]
    order = np.argsort(-probs[i])[:3]
    assert [name for _, name in shown] == [['cat', 'dog', 'fox', 'owl'][j] for j in order]
    np.testing.assert_allclose([float(p) for p, _ in shown], probs[i][order], atol=1e-4)


def test_top_k_is_capped_and_flags_checked(model_dir, images, capsys):
  directory, _, _ = model_dir
  assert cli.main(['predict', f'--checkpoint={directory}', '--top_k=10',
                   images['wide.png']]) == 0
  assert len(capsys.readouterr().out.splitlines()) == 1 + 4
  assert cli.main(['predict', f'--checkpoint={directory}', '--top_k=0',
                   images['wide.png']]) == 2
  assert '--top_k=0: expected an integer >= 1' in capsys.readouterr().err
  assert cli.main(['predict', f'--checkpoint={directory}/nope', images['wide.png']]) == 2
  assert 'is not a model directory' in capsys.readouterr().err


def test_class_names_fall_back_to_indices():
  assert predict.class_names({}, 3) == ['class_0', 'class_1', 'class_2']
  assert predict.class_names({'class_names': ['a', 'b']}, 3) == ['class_0', 'class_1', 'class_2']
