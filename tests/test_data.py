"""squeezejax.data: the real Fashion-MNIST builder, synthetic data, folders, augment,
streams (on synthetic data and tfds.testing.mock_data) and every UserError.

The Fashion-MNIST test needs Debian's `dataset-fashion-mnist` (CI installs it);
it prepares the builder once into a temporary data_dir shared by the module.
"""

import os
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from PIL import Image

from squeezejax import data
from squeezejax.data import arrays
from squeezejax.data import fashion_mnist_local as fml
from squeezejax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _one_line_error(fn, *words):
  with pytest.raises(UserError) as info:
    fn()
  message = str(info.value)
  assert '\n' not in message, message
  for word in words:
    assert word in message, (word, message)
  assert isinstance(info.value, UserError)
  return message


# -- Fashion-MNIST (real files) ---------------------------------------------------


@pytest.fixture(scope='module')
def fashion_mnist(tmp_path_factory):
  missing = fml.missing_files(fml.source_dir())
  if missing:
    pytest.fail(f'Fashion-MNIST IDX files missing ({missing}): apt-get install -y '
                'dataset-fashion-mnist')
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  return data_dir, data.load_arrays('fashion_mnist', 'train', data_dir=data_dir), \
      data.load_arrays('fashion_mnist', 'test', data_dir=data_dir)


def test_fashion_mnist_local_builder_reads_the_debian_files(fashion_mnist):
  data_dir, train, test = fashion_mnist
  assert train.images.shape == (60_000, 28, 28, 1) and train.images.dtype == np.uint8
  assert test.images.shape == (10_000, 28, 28, 1)
  assert train.labels.dtype == np.int32
  # The files' order is kept: these are the first labels of the original IDX files.
  assert train.labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]
  assert test.labels[:5].tolist() == [9, 2, 1, 1, 6]
  assert np.bincount(train.labels).tolist() == [6000] * 10
  assert np.bincount(test.labels).tolist() == [1000] * 10
  assert train.num_classes == 10 and train.class_names[0] == 'T-shirt/top'
  assert train.class_names[9] == 'Ankle boot'
  # Pixels survive the PNG round trip through TFDS exactly.
  raw = fml.read_idx(os.path.join(fml.source_dir(), 't10k-images-idx3-ubyte.gz'), 2051, 10_000)
  np.testing.assert_array_equal(test.images[:100, ..., 0], raw[:100])
  # The published mean/std used for normalisation match the train split.
  mean, std = data.channel_stats(train.images)
  np.testing.assert_allclose(mean, train.mean, atol=5e-4)
  np.testing.assert_allclose(std, train.std, atol=5e-4)
  # Prepared once as a real TFDS dataset, and read back by TFDS.
  import tensorflow_datasets as tfds
  builder = tfds.builder('fashion_mnist_local', data_dir=data_dir)
  assert builder.is_prepared()
  assert builder.info.splits['train'].num_examples == 60_000
  assert builder.info.splits['test'].num_examples == 10_000
  assert str(builder.info.file_format) == 'FileFormat.TFRECORD'


def test_fashion_mnist_is_read_once_per_process_and_held_read_only(fashion_mnist, monkeypatch):
  data_dir, train, _ = fashion_mnist

  def read_again(*args, **kwargs):
    raise AssertionError('a split was read from TFDS again')

  monkeypatch.setattr('squeezejax.data.arrays._read_tfds', read_again)
  again = data.load_arrays('fashion_mnist', 'train', data_dir=data_dir)
  assert again is train  # a sweep's points share one copy
  assert not train.images.flags.writeable and not train.labels.flags.writeable
  # Another key (a resize) is held apart, and built from the decoded split on disk.
  small = data.load_arrays('fashion_mnist', 'train', data_dir=data_dir, image_size=32)
  assert small is not train and small.images.shape == (60_000, 32, 32, 1)


def test_a_decoded_split_is_loaded_without_tensorflow(fashion_mnist, tmp_path):
  # What the first read keeps: a later process (a sweep's, a test's) loads the same
  # arrays without importing TensorFlow or reading TFDS.
  data_dir, train, test = fashion_mnist
  out = tmp_path / 'arrays.npz'
  code = ('import sys, numpy as np\n'
          'from squeezejax import data\n'
          f'tr = data.load_arrays("fashion_mnist", "train", data_dir={data_dir!r})\n'
          f'te = data.load_arrays("fashion_mnist", "test", data_dir={data_dir!r})\n'
          'assert "tensorflow" not in sys.modules, "TensorFlow was imported"\n'
          f'np.savez({str(out)!r}, a=tr.images, b=tr.labels, c=te.images, d=te.labels)\n')
  subprocess.run([sys.executable, '-c', code], check=True, timeout=120)
  with np.load(out) as kept:
    for name, array in zip('abcd', (train.images, train.labels, test.images, test.labels)):
      np.testing.assert_array_equal(kept[name], array)
      assert kept[name].dtype == array.dtype


def test_a_damaged_or_stale_decoded_split_is_read_again(fashion_mnist, tmp_path, monkeypatch):
  data_dir, _, test = fashion_mnist
  path = arrays._decoded_path('fashion_mnist', 'test', data_dir)
  assert os.path.exists(path)
  with open(path, 'r+b') as f:  # truncated, as by a full disk
    f.truncate(1000)
  images, labels = arrays._decoded('fashion_mnist', 'test', data_dir)
  np.testing.assert_array_equal(images, test.images)
  np.testing.assert_array_equal(labels, test.labels)
  with np.load(path) as kept:  # and written whole again
    np.testing.assert_array_equal(kept['labels'], test.labels)
  # IDX files read from another folder are another key.
  for name in data.core.FASHION_MNIST_FILES['test'][:2]:
    os.symlink(os.path.join(fml.source_dir(), name), tmp_path / name)
  monkeypatch.setenv(fml.SOURCE_DIR_ENV, str(tmp_path))
  assert arrays._decoded_path('fashion_mnist', 'test', data_dir) != path


def test_a_placeholder_split_is_the_real_one_in_all_but_its_pixels(fashion_mnist):
  # What a sweep's compile-ahead helper builds a point's programs on, without reading.
  _, *real = fashion_mnist
  for split, ds in zip(('train', 'test'), real):
    fake = arrays.placeholder('fashion_mnist', split)
    for name in ('images', 'labels'):
      a, b = getattr(fake, name), getattr(ds, name)
      assert (a.shape, a.dtype) == (b.shape, b.dtype), (split, name)
    assert (fake.num_classes, fake.class_names, fake.mean, fake.std) == (
        ds.num_classes, ds.class_names, ds.mean, ds.std)
  assert arrays.placeholder('fashion_mnist', 'test', 32).images.shape == (10_000, 32, 32, 1)
  assert arrays.placeholder('synthetic', 'train') is None  # generated: it reads nothing
  assert arrays.placeholder('cifar10', 'train').images.shape == (50_000, 32, 32, 3)


def test_programs_built_on_a_placeholder_are_the_real_ones(fashion_mnist):
  # So the programs the helper compiles ahead have the keys the trainer looks up.
  from squeezejax import configs, parallel, programs
  experiment = os.path.join(ROOT, 'experiments', 'fig3a_squeeze_ratio.py')
  config = configs.load(f'{experiment}:test', {'dataset': 'fashion_mnist', 'num_devices': 2,
                                               'data_dir': fashion_mnist[0]})
  mesh = parallel.make_mesh(2)
  texts = []
  for placeholder in (False, True):
    source = data.make_input(config, placeholder=placeholder)
    run = programs.build(config, mesh, source)
    texts.append([p.as_text() for p in run.lower(next(run.batches(source, 0)), source)])
  # eval, train, the parameters' unravelling (the flat layout's, for evaluating and saving), init
  assert len(texts[1]) == 4 and texts[0] == texts[1]


def test_fashion_mnist_missing_files_say_how_to_install(tmp_path, monkeypatch):
  monkeypatch.setenv(fml.SOURCE_DIR_ENV, str(tmp_path / 'nowhere'))
  _one_line_error(lambda: data.load_arrays('fashion_mnist', 'train', data_dir=str(tmp_path)),
                  'apt-get install dataset-fashion-mnist', 'nowhere')


# -- synthetic --------------------------------------------------------------------


def test_synthetic_is_deterministic_balanced_and_learnable():
  train = data.synthetic('train')
  again = data.arrays._synthetic_arrays.__wrapped__('train')  # pylint: disable=protected-access
  np.testing.assert_array_equal(train.images, again[0])
  np.testing.assert_array_equal(train.labels, again[1])
  test = data.load_arrays('synthetic', 'test')
  assert train.images.shape == (640, 16, 16, 3) and test.images.shape == (300, 16, 16, 3)
  assert test.images.dtype == np.uint8 and test.labels.dtype == np.int32
  assert np.bincount(test.labels).tolist() == [30] * 10
  assert not np.array_equal(train.images[:300], test.images)
  assert data.describe('synthetic').split_sizes == {'train': 640, 'test': 300}
  # Learnable: the nearest class-mean colour already separates the test set.
  colour = lambda d: d.images.reshape(len(d), -1, 3).mean(1)
  centroids = np.stack([colour(train)[train.labels == c].mean(0) for c in range(10)])
  guess = np.argmin(((colour(test)[:, None] - centroids[None]) ** 2).sum(-1), 1)
  assert (guess == test.labels).mean() > 0.9


# -- on-device augment / preprocess -------------------------------------------------


@pytest.fixture(scope='module')
def jitted_augment():
  return jax.jit(data.augment, static_argnames=('kind', 'image_size', 'mean', 'std'))


@pytest.mark.parametrize('kind', data.AUGMENTATIONS)
def test_augment_shapes_ranges_and_no_recompile(kind, jitted_augment):
  train = data.synthetic('train')
  kw = dict(kind=kind, image_size=16, mean=train.mean, std=train.std)
  a = jitted_augment(train.images[:8], jax.random.key(0), **kw)
  b = jitted_augment(train.images[8:16], jax.random.key(1), **kw)
  again = jitted_augment(train.images[:8], jax.random.key(0), **kw)
  assert a.shape == (8, 16, 16, 3) and a.dtype == np.float32
  np.testing.assert_array_equal(a, again)  # a pure function of (images, key)
  lo = (0 - np.array(train.mean)) / np.array(train.std)
  hi = (1 - np.array(train.mean)) / np.array(train.std)
  assert np.all(np.asarray(a) >= lo - 1e-4) and np.all(np.asarray(a) <= hi + 1e-4)
  assert b.shape == a.shape
  other_key = jitted_augment(train.images[:8], jax.random.key(5), **kw)
  assert np.array_equal(a, other_key) == (kind == 'none')


def test_augment_compiles_once_per_kind(jitted_augment):
  train = data.synthetic('train')
  before = jitted_augment._cache_size()  # pylint: disable=protected-access
  for seed in range(3):  # new data and keys, same shapes: one compilation
    jitted_augment(np.asarray(train.images[seed * 8:seed * 8 + 8]), jax.random.key(seed),
                   kind='crop_flip', image_size=32, mean=train.mean, std=train.std)
  assert jitted_augment._cache_size() - before == 1  # pylint: disable=protected-access
  # Upsampling works too (28 px Fashion-MNIST-like -> 32).
  up = jitted_augment(np.zeros((4, 28, 28, 1), np.uint8), jax.random.key(0), kind='crop_flip',
                      image_size=32, mean=(0.286,), std=(0.353,))
  assert up.shape == (4, 32, 32, 1)


def test_crop_flip_is_a_shifted_window_of_the_padded_image():
  images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), np.uint8)
  out = data.augment(images, jax.random.key(3), kind='crop_flip', image_size=8,
                     mean=(0.0,), std=(1 / 255,))  # normalised == raw pixel values
  out = np.asarray(out)[..., 0]
  flipped = 0
  for image, got in zip(images[..., 0], out):
    padded = np.pad(image, 4).astype(np.float32)
    windows = [padded[y:y + 8, x:x + 8] for y in range(9) for x in range(9)]
    if any(np.allclose(got, w) for w in windows):
      continue
    assert any(np.allclose(got[:, ::-1], w) for w in windows)
    flipped += 1
  assert 0 < flipped < 16


def test_preprocess_normalises_and_resizes():
  test = data.synthetic('test')
  x = np.asarray(data.preprocess(test.images[:4], image_size=16, mean=test.mean, std=test.std))
  expected = (test.images[:4] / 255.0 - np.array(test.mean)) / np.array(test.std)
  np.testing.assert_allclose(x, expected, atol=1e-5)
  none = data.augment(test.images[:4], jax.random.key(0), kind='none', image_size=16,
                      mean=test.mean, std=test.std)
  np.testing.assert_allclose(none, x, atol=1e-6)
  big = data.preprocess(test.images[:4], image_size=24, mean=test.mean, std=test.std)
  assert big.shape == (4, 24, 24, 3)
  flat = data.preprocess(np.full((2, 16, 16, 3), 255, np.uint8), image_size=24, mean=0.5,
                         std=0.5)
  np.testing.assert_allclose(flat, 1.0, atol=1e-5)  # a resize keeps a constant image


# -- streams ------------------------------------------------------------------------


def test_eval_stream_pads_and_masks_exactly():
  test = data.synthetic('test')  # 300 examples
  expected = np.asarray(data.preprocess(test.images, image_size=16, mean=test.mean,
                                        std=test.std))
  seen_images, seen_labels, counts = [], [], []
  for p in range(2):
    total, batches = data.eval_stream('synthetic', 'test', global_batch=64, image_size=16,
                                      process_index=p, process_count=2)
    batches = list(batches)
    assert total == 300
    counts.append(len(batches))
    for b in batches:
      assert b['image'].shape == (32, 16, 16, 3) and b['mask'].shape == (32,)
      keep = b['mask'] == 1
      assert np.all(b['image'][~keep] == 0) and np.all(b['label'][~keep] == 0)
      seen_images.append(b['image'][keep])
      seen_labels.append(b['label'][keep])
  assert counts == [5, 5]  # ceil(150 / 32) on both processes: no hang in collectives
  np.testing.assert_array_equal(np.concatenate(seen_labels), test.labels)
  np.testing.assert_allclose(np.concatenate(seen_images), expected, atol=1e-5)


def test_train_stream_resumes_exactly_and_shards_by_process():
  kw = dict(global_batch=64, image_size=16, augment='crop_flip', seed=3, process_count=2)
  stream = data.train_stream('synthetic', 'train', process_index=0, start_step=0, **kw)
  first = [next(stream) for _ in range(13)]  # 640 / 2 / 32 = 10 steps per epoch
  for start in (7, 12):
    resumed = next(data.train_stream('synthetic', 'train', process_index=0,
                                     start_step=start, **kw))
    np.testing.assert_array_equal(resumed['image'], first[start]['image'])
    np.testing.assert_array_equal(resumed['label'], first[start]['label'])
  assert not np.array_equal(first[0]['label'], first[10]['label'])  # epochs reshuffle
  # Without augmentation an epoch of process p is exactly its range of examples.
  train = data.synthetic('train')
  kw['augment'] = 'none'
  for p in range(2):
    stream = data.train_stream('synthetic', 'train', process_index=p, start_step=0, **kw)
    epoch = np.concatenate([next(stream)['image'] for _ in range(10)])
    raw = np.round((epoch * np.array(train.std) + np.array(train.mean)) * 255).astype(np.uint8)
    got = sorted(r.tobytes() for r in raw)
    want = sorted(r.tobytes() for r in train.images[p * 320:(p + 1) * 320])
    assert got == want


def test_cifar10_and_photo_streams_on_mock_data():
  import tensorflow_datasets as tfds
  with tfds.testing.mock_data(num_examples=20):
    cifar = data.load_arrays('cifar10', 'train')
    assert cifar.images.shape == (20, 32, 32, 3) and cifar.images.dtype == np.uint8
    assert cifar.num_classes == 10 and cifar.class_names[0] == 'airplane'
    assert cifar.labels.dtype == np.int32 and cifar.labels.max() < 10
    for name, kind, size in [('imagenette', 'inception', 32), ('imagenet2012', 'caffe', 40)]:
      kw = dict(global_batch=8, image_size=size, augment=kind, seed=0, process_index=0,
                process_count=1)
      stream = data.train_stream(name, 'train', **kw)
      batches = [next(stream) for _ in range(4)]  # 20 examples: 2 steps per epoch
      assert batches[0]['image'].shape == (8, size, size, 3)
      assert batches[0]['image'].dtype == np.float32 and batches[0]['label'].dtype == np.int32
      resumed = next(data.train_stream(name, 'train', start_step=3, **kw))
      np.testing.assert_array_equal(resumed['image'], batches[3]['image'])
      total, it = data.eval_stream(name, 'validation', global_batch=8, image_size=size,
                                   process_index=0, process_count=1)
      masks = [b['mask'] for b in it]
      assert total == 20 and len(masks) == 3 and int(np.sum(masks)) == 20
  assert data.describe('imagenette').num_classes == 10
  assert not data.is_in_memory('imagenet2012') and data.is_in_memory('folder:/x')


# -- image folders ------------------------------------------------------------------


def _write(path, array, fmt='PNG'):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(array).save(path, format=fmt)


def test_folder_class_layout_splits_every_fifth_image(tmp_path):
  for c, name in enumerate(['cat', 'dog']):
    for i in range(10):
      if i % 2:  # grayscale PNG, odd size
        _write(str(tmp_path / name / f'{i:02d}.png'), np.full((20, 30), 50 * c, np.uint8))
      else:  # RGB JPEG
        _write(str(tmp_path / name / f'{i:02d}.jpg'), np.full((12, 12, 3), 200, np.uint8),
               'JPEG')
  (tmp_path / 'dog' / 'notes.txt').write_text('not an image')
  train = data.load_arrays(f'folder:{tmp_path}', 'train', image_size=8)
  test = data.load_arrays(f'folder:{tmp_path}', 'test', image_size=8)
  assert train.images.shape == (16, 8, 8, 3) and test.images.shape == (4, 8, 8, 3)
  assert train.class_names == ('cat', 'dog') and train.num_classes == 2
  assert test.labels.tolist() == [0, 0, 1, 1]  # files 04 and 09 of each class
  assert np.all(test.images[1] == 0) and np.all(test.images[3] == 50)  # grayscale -> RGB
  assert abs(int(test.images[0, 0, 0, 0]) - 200) <= 2  # JPEG, resized
  assert train.mean == data.core.IMAGENET_MEAN
  default = data.load_arrays(f'folder:{tmp_path}', 'test')
  assert default.images.shape[1:] == (224, 224, 3)
  assert data.describe(f'folder:{tmp_path}').split_sizes == {'train': 16, 'test': 4}


def test_folder_split_layout_uses_tfds_image_folder(tmp_path):
  for split, n in [('train', 3), ('test', 2)]:
    for name in ['a', 'b', 'c']:
      for i in range(n):
        _write(str(tmp_path / split / name / f'{i}.png'), np.full((9, 7, 3), 10, np.uint8))
  train = data.load_arrays(f'folder:{tmp_path}', 'train', image_size=6)
  assert train.images.shape == (9, 6, 6, 3) and sorted(train.labels.tolist()) == [0] * 3 + \
      [1] * 3 + [2] * 3
  assert data.load_arrays(f'folder:{tmp_path}', 'test', image_size=6).images.shape[0] == 6
  _one_line_error(lambda: data.load_arrays(f'folder:{tmp_path}', 'validation'),
                  "'validation'", 'train', 'test')


def test_folder_errors(tmp_path):
  _one_line_error(lambda: data.load_arrays(f'folder:{tmp_path}/missing', 'train'),
                  'missing', 'does not exist')
  (tmp_path / 'empty' / 'cat').mkdir(parents=True)
  _one_line_error(lambda: data.load_arrays(f'folder:{tmp_path}/empty', 'train'),
                  'has no images', 'cat')
  for i in range(5):  # one class: a 1-class model would score "100%"
    _write(str(tmp_path / 'one' / 'cat' / f'{i}.png'), np.zeros((4, 4, 3), np.uint8))
  _one_line_error(lambda: data.load_arrays(f'folder:{tmp_path}/one', 'train'),
                  '1 class folder', 'at least 2')
  (tmp_path / 'one' / 'dog').mkdir()  # an empty class next to a full one
  _one_line_error(lambda: data.load_arrays(f'folder:{tmp_path}/one', 'train'),
                  'dog', 'has no images')
  bad = tmp_path / 'bad'
  for i in range(5):
    _write(str(bad / 'cat' / f'{i}.png'), np.zeros((4, 4, 3), np.uint8))
    _write(str(bad / 'dog' / f'{i}.png'), np.zeros((4, 4, 3), np.uint8))
  (bad / 'cat' / '2.png').write_bytes(b'this is not a png')
  _one_line_error(lambda: data.load_arrays(f'folder:{bad}', 'train', image_size=4),
                  'cannot read image', '2.png')


# -- user errors ----------------------------------------------------------------------


def test_data_errors_are_one_line_and_name_the_value():
  _one_line_error(lambda: data.load_arrays('mnist', 'train'), "'mnist'", 'fashion_mnist',
                  'folder:PATH')
  _one_line_error(lambda: data.load_arrays('synthetic', 'valid'), "'valid'", 'train, test')
  _one_line_error(lambda: data.load_arrays('cifar10', 'validation'), "'validation'", 'test')
  _one_line_error(lambda: data.load_arrays('imagenette', 'train'), 'too large',
                  'train_stream')
  _one_line_error(lambda: data.load_arrays('folder:', 'train'), 'folder:/path')
  _one_line_error(lambda: data.load_arrays('synthetic', 'train', image_size=-3), '-3')
  _one_line_error(lambda: data.augment(np.zeros((2, 8, 8, 3), np.uint8), jax.random.key(0),
                                       kind='mixup', image_size=8, mean=0.5, std=0.5),
                  "'mixup'", 'crop_flip', 'inception')
  _one_line_error(lambda: data.preprocess(np.zeros((2, 8, 8, 3), np.uint8), image_size=8,
                                          mean=(0.5, 0.5), std=0.5), 'mean', 'expected 3')
  _one_line_error(lambda: data.train_stream('synthetic', 'train', global_batch=30,
                                            process_count=4), '30', 'multiple', '4')
  _one_line_error(lambda: data.train_stream('synthetic', 'train', global_batch=64,
                                            augment='flip'), "'flip'")
  _one_line_error(lambda: data.train_stream('synthetic', 'train', global_batch=1024),
                  '1024', '640')
  _one_line_error(lambda: data.eval_stream('imagenet2012', 'test', global_batch=8),
                  "'test'", 'validation')


def test_import_is_cheap_and_keeps_tensorflow_out():
  code = ('import sys, squeezejax.data; '
          'print("tensorflow" in sys.modules, "tensorflow_datasets" in sys.modules)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True).stdout.split()
  assert out == ['False', 'False']


def _prefetch_threads():
  return sum(t.name == 'squeezejax-prefetch' for t in threading.enumerate())


def test_prefetch_raises_the_pipelines_error_and_ends_its_thread_when_dropped():
  def failing():
    yield from (1, 2)
    raise ValueError('bad record 3')

  got = []
  with pytest.raises(ValueError, match='bad record 3'):
    for item in data.prefetch(failing()):
      got.append(item)
  assert got == [1, 2]

  before = _prefetch_threads()
  batches = data.prefetch(iter(range(10**9)))  # its queue fills; the thread waits to put
  assert next(batches) == 0 and _prefetch_threads() == before + 1
  batches.close()  # what dropping the generator does at the end of a run
  deadline = time.time() + 10
  while _prefetch_threads() > before and time.time() < deadline:
    time.sleep(0.05)
  assert _prefetch_threads() == before
