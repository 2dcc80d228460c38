"""The Deep Compression file format and its accounting, on the authors' compressed
SqueezeNet (tests/data/deep_compression, BSD licence beside it)."""

import json
import os

import numpy as np
import pytest

from squeezejax.compression import accounting
from squeezejax.compression import format as format_lib
from squeezejax.compression import weights
from squeezejax.errors import UserError

NET = os.path.join(os.path.dirname(__file__), 'data', 'deep_compression',
                   'compressed_SqueezeNet.net')


@pytest.fixture(scope='module')
def raw():
  with open(NET, 'rb') as f:
    return f.read()


@pytest.fixture(scope='module')
def encoded():
  return weights.read_file(NET, weights.authors_spec())


def independent_decode(raw: bytes, shapes):
  """The authors' decode.py, restated: counts, then codebook, bias, codes, nibbles."""
  counts = np.frombuffer(raw[:4 * len(shapes)], np.uint32)
  offset, out = 4 * len(shapes), []
  for n, shape in zip(counts, shapes):
    n = int(n)
    codebook = np.frombuffer(raw, np.float32, 256, offset)
    offset += 1024
    bias = np.frombuffer(raw, np.float32, shape[0], offset)
    offset += 4 * shape[0]
    codes = np.frombuffer(raw, np.uint8, n, offset)
    offset += n
    packed = np.frombuffer(raw, np.uint8, (n - 1) // 2 + 1, offset)
    offset += (n - 1) // 2 + 1
    gaps = np.stack([packed & 15, packed >> 4], 1).ravel()[:n]
    w = np.zeros(int(np.prod(shape)), np.float32)
    w[np.cumsum(gaps.astype(np.int64) + 1) - 1] = codebook[codes]
    out.append((w.reshape(shape), bias))
  return out, offset


def test_decodes_exactly_and_accounts_for_every_byte(raw, encoded):
  reference, consumed = independent_decode(raw, [layer.shape for layer in
                                                 weights.layers(weights.authors_spec())])
  assert consumed == len(raw) == 675_763
  assert len(encoded) == 26
  for e, (w, b) in zip(encoded, reference):
    np.testing.assert_array_equal(e.weights(), w)
    np.testing.assert_array_equal(e.bias, b)
    assert e.codebook[0] == 0 and len(np.unique(e.codebook)) == 256
  assert sum(e.nonzero for e in encoded) == 415_921
  assert sum(e.fillers for e in encoded) == 6_162


def test_reencodes_byte_identically(raw, encoded):
  again = [format_lib.encode(e.layer, format_lib.codes_from_weights(e.weights(), e.codebook),
                             e.codebook, e.bias) for e in encoded]
  assert format_lib.write(again) == raw


def test_accounting_of_the_authors_file(raw, encoded):
  rows = accounting.layer_sizes(encoded, 8, 4)
  s = accounting.summary(rows)
  assert s['bytes'] == accounting.file_bytes(rows) == len(raw)
  assert s['label_mb'] == 0.66  # 659.9 KiB, "660KB" in the authors' README
  assert round(s['mib'], 3) == 0.644 and round(s['mb'], 3) == 0.676
  assert s['float32']['label_mb'] == 4.8
  assert round(100 * s['density'], 1) == 33.4
  by_name = {r.name: r for r in rows}
  assert by_name['conv10'].nonzero == 102_323 and by_name['conv10'].entries == 105_973
  assert '| conv10 | 512,000 | 20.0% |' in accounting.table(rows)


@pytest.mark.parametrize('code_bits,index_bits,huffman',
                         [(4, 4, False), (6, 3, False), (5, 8, False), (8, 4, True),
                          (6, 5, True), (1, 1, False)])
def test_round_trip_any_bits(code_bits, index_bits, huffman):
  rng = np.random.default_rng(code_bits * 10 + index_bits)
  layers = [format_lib.Layer('a', (7, 3, 3, 3)), format_lib.Layer('b', (5, 40, 1, 1))]
  encoded = []
  for layer in layers:
    dense = rng.integers(1, 1 << code_bits, layer.shape) * (rng.random(layer.shape) < 0.2)
    dense.flat[-1] = 1  # a non-zero at the very end, after a long gap
    codebook = np.concatenate([[0.0], rng.standard_normal((1 << code_bits) - 1)])
    encoded.append(format_lib.encode(layer, dense, codebook, rng.standard_normal(layer.shape[0]),
                                     index_bits))
  data = format_lib.write(encoded, code_bits, index_bits, huffman)
  rows = accounting.layer_sizes(encoded, code_bits, index_bits, huffman)
  assert accounting.file_bytes(rows) == len(data)
  back = format_lib.read(data, layers, code_bits, index_bits, huffman)
  for a, b in zip(encoded, back):
    np.testing.assert_array_equal(a.dense_codes(), b.dense_codes())
    np.testing.assert_array_equal(a.weights(), b.weights())
    np.testing.assert_array_equal(a.bias, b.bias)
    # one filler for every 2**index_bits positions of a gap
    gaps = np.diff(np.flatnonzero(a.dense_codes()), prepend=-1)
    assert a.fillers == int(((gaps - 1) // (1 << index_bits)).sum())


def test_huffman_shrinks_the_authors_streams(encoded):
  plain = accounting.file_bytes(accounting.layer_sizes(encoded, 8, 4))
  coded = format_lib.write(encoded, 8, 4, huffman=True)
  assert len(coded) < 0.86 * plain
  back = format_lib.read(coded, [e.layer for e in encoded], 8, 4, huffman=True)
  for a, b in zip(encoded, back):
    np.testing.assert_array_equal(a.dense_codes(), b.dense_codes())


@pytest.mark.parametrize('damage', ['truncated', 'longer', 'foreign', 'huge_count'])
def test_bad_files_are_user_errors(raw, damage):
  data = {'truncated': raw[:-1], 'longer': raw + b'\0',
          'foreign': b'\x89PNG\r\n' + bytes(5000),
          'huge_count': np.array([2**31], '<u4').tobytes() + raw[4:]}[damage]
  with pytest.raises(UserError, match='Deep Compression|truncated'):
    format_lib.read(data, weights.layers(weights.authors_spec()))


@pytest.mark.parametrize('bits', [0, 9, 2.5, True])
def test_bits_outside_one_to_eight(bits):
  with pytest.raises(UserError, match='from 1 to 8'):
    format_lib.check_bits(bits, '--code_bits')


def test_table2_report(tmp_path):
  from squeezejax import report
  rows = [dict(row='AlexNet-small', seed=s, top1=t, bytes=400_000, label_mb=0.38)
          for s, t in ((0, 0.91), (1, 0.89))]
  rows += [dict(row='SqueezeNet-small', seed=s, top1=t, bytes=40_000, label_mb=0.038)
           for s, t in ((0, 0.90), (1, 0.88))]
  rows += [dict(row='+ weight sharing, 6-bit', seed=s, top1=t, bytes=b, label_mb=0.0038,
                density=0.334) for s, t, b in ((0, 0.89, 3_800), (1, 0.86, 4_000))]
  record = {'seeds': 2, 'density': '*=0.33', 'base_steps': 1, 'retrain_steps': 1,
            'share_steps': 1, 'rows': rows, 'imagenet': [dict(
                row='x', bytes=675_763, label_mb=0.66, vs_alexnet_label=363.6,
                vs_alexnet_bytes=360.9)]}
  (tmp_path / 'table2.json').write_text(json.dumps(record))
  md, png = report.make_report(str(tmp_path))
  text = open(md).read()
  # reductions by label (0.38 / 0.038) and by bytes (400,000 / 40,000 = 10.0x)
  assert '| AlexNet-small | 100.0% | 90.00 [89.00, 91.00] | +1.00 | 400,000 | 0.38 | 1.0x | 1.0x | 0.1x |' in text
  assert '| SqueezeNet-small | 100.0% | 89.00 [88.00, 90.00] |  | 40,000 | 0.038 | 10.0x | 10.0x | 1.0x |' in text
  # the paired change is the mean of the per-seed changes (-1, -2)
  assert '| + weight sharing, 6-bit | 33.4% | 87.50 [86.00, 89.00] | -1.50 | 3,900 | 0.0038 | 100.0x | 102.6x | 10.3x |' in text
  assert '| x | 675,763 | 0.66 | 363.6x | 360.9x |' in text
  assert os.path.getsize(png) > 10_000
