"""The authors' Deep Compression file (`compressed_SqueezeNet.net`), read and written.

Layout, for L convolution layers in network order (all little-endian):

    uint32 entries[L]                   stored entries per layer (non-zeros + fillers)
    per layer:
      float32 codebook[2**code_bits]    codebook[0] == 0.0 (pruned weights, fillers)
      float32 bias[C_out]               not quantized
      codes    entries x code_bits      one byte per code at 8 bits, else packed LSB first
      indices  entries x index_bits     relative positions, packed LSB first (two 4-bit
                                        gaps per byte, low nibble first)

The file holds no shapes: the network (the prototxt, here a `SqueezeNetSpec`) gives
each layer's OIHW weight shape. Positions run over the flattened OIHW weights:
`position = cumsum(index + 1) - 1`. A gap longer than 2**index_bits is bridged by a
"filler", a stored entry with code 0; the canonical rule is one filler for every
2**index_bits positions of a gap, i.e. ceil(gap / 2**index_bits) entries per
non-zero. With 8-bit codes and 4-bit indices this reproduces the authors' file
byte for byte (tests/test_compression.py).

`huffman=True` is a second format: each layer's code and index streams are Huffman
coded (section 4 of the paper). After the bias come the canonical code lengths
(uint8[2**code_bits], uint8[2**index_bits]), then uint32 byte counts and the two
bit streams (MSB first).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Sequence

import numpy as np

from squeezejax.errors import UserError

MAX_HUFFMAN_BITS = 24  # code length limit (a lookup table of 2**24 entries at worst)


@dataclasses.dataclass(frozen=True)
class Layer:
  """One stored convolution: its name and OIHW weight shape."""
  name: str
  shape: tuple[int, ...]

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  @property
  def out_channels(self) -> int:
    return self.shape[0]


@dataclasses.dataclass
class Encoded:
  """One layer as stored: codebook, bias, and the entry streams (fillers included)."""
  layer: Layer
  codebook: np.ndarray  # float32[2**code_bits]
  bias: np.ndarray  # float32[C_out]
  codes: np.ndarray  # per entry, 0 for fillers
  indices: np.ndarray  # per entry, gap - 1

  @property
  def entries(self) -> int:
    return len(self.codes)

  @property
  def positions(self) -> np.ndarray:
    return np.cumsum(self.indices.astype(np.int64) + 1) - 1

  @property
  def nonzero(self) -> int:
    return int(np.count_nonzero(self.codes))

  @property
  def fillers(self) -> int:
    return self.entries - self.nonzero

  def dense_codes(self) -> np.ndarray:
    """int32 codes in OIHW, 0 where a weight is pruned."""
    out = np.zeros(self.layer.size, np.int32)
    out[self.positions] = self.codes
    return out.reshape(self.layer.shape)

  def weights(self) -> np.ndarray:
    """The decoded float32 OIHW weights: codebook[code] at each position."""
    return self.codebook[self.dense_codes()]


# -- bits ---------------------------------------------------------------------------


def check_bits(value, flag: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 8:
    raise UserError(f'{flag}={value!r} is not allowed: expected an integer from 1 to 8')
  return int(value)


def pack(values: np.ndarray, bits: int) -> bytes:
  """Fixed-width values packed LSB first: at 4 bits, two per byte, low nibble first."""
  values = np.asarray(values, np.uint16)
  if bits == 8:
    return values.astype(np.uint8).tobytes()
  planes = ((values[:, None] >> np.arange(bits, dtype=np.uint16)) & 1).astype(np.uint8)
  return np.packbits(planes.ravel(), bitorder='little').tobytes()


def unpack(data: bytes, count: int, bits: int) -> np.ndarray:
  if bits == 8:
    return np.frombuffer(data, np.uint8, count).astype(np.int32)
  planes = np.unpackbits(np.frombuffer(data, np.uint8), bitorder='little')
  planes = planes[:count * bits].reshape(count, bits).astype(np.int32)
  return (planes << np.arange(bits)).sum(1, dtype=np.int32)


def packed_bytes(count: int, bits: int) -> int:
  return -(-count * bits // 8)


# -- encoding ------------------------------------------------------------------------


def entries_from_codes(dense_codes: np.ndarray, index_bits: int = 4
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(codes, indices) of the stored entries: fillers (code 0) bridge long gaps, one for
  every 2**index_bits positions of a gap."""
  flat = np.asarray(dense_codes).ravel()
  positions = np.flatnonzero(flat)
  span = 1 << index_bits
  gaps = np.diff(positions, prepend=-1)
  fillers = (gaps - 1) // span
  per = fillers + 1  # entries per non-zero: the fillers, then the non-zero itself
  last = np.cumsum(per) - 1  # where each non-zero lands among the entries
  codes = np.zeros(int(per.sum()), np.int32)
  indices = np.full(len(codes), span - 1, np.int32)  # a filler advances a full span
  codes[last] = flat[positions]
  indices[last] = gaps - fillers * span - 1
  return codes, indices


def codes_from_weights(weights: np.ndarray, codebook: np.ndarray) -> np.ndarray:
  """The nearest codebook entry of every weight (0 for zero weights): the inverse of
  `Encoded.weights` on decoded weights."""
  w = np.asarray(weights, np.float32)
  codebook = np.asarray(codebook, np.float32)
  order = np.argsort(codebook[1:], kind='stable') + 1  # entry 0 stays for zeros
  sorted_cb = codebook[order]
  j = np.clip(np.searchsorted(sorted_cb, w), 1, len(sorted_cb) - 1)
  nearer_left = np.abs(w - sorted_cb[j - 1]) <= np.abs(sorted_cb[j] - w)
  codes = order[np.where(nearer_left, j - 1, j)]
  return np.where(w == 0, 0, codes).astype(np.int32)


def encode(layer: Layer, dense_codes: np.ndarray, codebook: np.ndarray, bias: np.ndarray,
           index_bits: int = 4) -> Encoded:
  dense_codes = np.asarray(dense_codes)
  if dense_codes.shape != layer.shape:
    raise ValueError(f'{layer.name}: codes of shape {dense_codes.shape}, expected {layer.shape}')
  codes, indices = entries_from_codes(dense_codes, index_bits)
  return Encoded(layer, np.asarray(codebook, np.float32), np.asarray(bias, np.float32),
                 codes, indices)


def write(encoded: Sequence[Encoded], code_bits: int = 8, index_bits: int = 4,
          huffman: bool = False) -> bytes:
  """The file's bytes (the authors' layout, or its Huffman variant)."""
  parts = [np.array([e.entries for e in encoded], '<u4').tobytes()]
  for e in encoded:
    if len(e.codebook) != 1 << code_bits or e.codebook[0] != 0:
      raise ValueError(f'{e.layer.name}: a codebook needs {1 << code_bits} entries and '
                       'entry 0 == 0.0')
    parts += [e.codebook.astype('<f4').tobytes(), e.bias.astype('<f4').tobytes()]
    if not huffman:
      parts += [pack(e.codes, code_bits), pack(e.indices, index_bits)]
      continue
    code_lengths = huffman_lengths(np.bincount(e.codes, minlength=1 << code_bits))
    index_lengths = huffman_lengths(np.bincount(e.indices, minlength=1 << index_bits))
    code_stream = huffman_encode(e.codes, code_lengths)
    index_stream = huffman_encode(e.indices, index_lengths)
    parts += [code_lengths.astype(np.uint8).tobytes(), index_lengths.astype(np.uint8).tobytes(),
              np.array([len(code_stream)], '<u4').tobytes(), code_stream,
              np.array([len(index_stream)], '<u4').tobytes(), index_stream]
  return b''.join(parts)


# -- decoding ------------------------------------------------------------------------


class _Reader:
  def __init__(self, data: bytes, what: str):
    self.data, self.offset, self.what = data, 0, what

  def take(self, n: int, for_what: str) -> bytes:
    if n < 0 or self.offset + n > len(self.data):
      raise UserError(f'{self.what} is truncated or not a Deep Compression file for this '
                      f'network: {for_what} needs bytes {self.offset}..{self.offset + n} of '
                      f'{len(self.data)}')
    out = self.data[self.offset:self.offset + n]
    self.offset += n
    return out


def read(data: bytes, layers: Sequence[Layer], code_bits: int = 8, index_bits: int = 4,
         huffman: bool = False, what: str = 'the file') -> list[Encoded]:
  """Decodes a file for `layers`; anything that does not fit them exactly is a UserError."""
  r = _Reader(bytes(data), what)
  counts = np.frombuffer(r.take(4 * len(layers), 'the header'), '<u4').astype(np.int64)
  out = []
  for layer, n in zip(layers, counts):
    if n > layer.size:
      raise UserError(f'{what} is not a Deep Compression file for this network: layer '
                      f'{layer.name} claims {n:,} entries but has {layer.size:,} weights')
    codebook = np.frombuffer(r.take(4 << code_bits, f'{layer.name} codebook'), '<f4')
    bias = np.frombuffer(r.take(4 * layer.out_channels, f'{layer.name} bias'), '<f4')
    if huffman:
      code_lengths = np.frombuffer(r.take(1 << code_bits, f'{layer.name} code table'), np.uint8)
      index_lengths = np.frombuffer(r.take(1 << index_bits, f'{layer.name} index table'),
                                    np.uint8)
      size = int(np.frombuffer(r.take(4, f'{layer.name} code stream size'), '<u4')[0])
      codes = huffman_decode(r.take(size, f'{layer.name} codes'), n, code_lengths, what)
      size = int(np.frombuffer(r.take(4, f'{layer.name} index stream size'), '<u4')[0])
      indices = huffman_decode(r.take(size, f'{layer.name} indices'), n, index_lengths, what)
    else:
      codes = unpack(r.take(packed_bytes(n, code_bits), f'{layer.name} codes'), n, code_bits)
      indices = unpack(r.take(packed_bytes(n, index_bits), f'{layer.name} indices'), n,
                       index_bits)
    e = Encoded(layer, codebook.astype(np.float32), bias.astype(np.float32), codes, indices)
    if n and e.positions[-1] >= layer.size:
      raise UserError(f'{what} is not a Deep Compression file for this network: layer '
                      f'{layer.name} has positions up to {e.positions[-1]:,} but '
                      f'{layer.size:,} weights')
    if codebook[0] != 0 or not np.isfinite(codebook).all() or not np.isfinite(bias).all():
      raise UserError(f'{what} is not a Deep Compression file: layer {layer.name} has a '
                      'codebook whose entry 0 is not 0.0, or non-finite values')
    out.append(e)
  if r.offset != len(r.data):
    raise UserError(f'{what} is not a Deep Compression file for this network: '
                    f'{len(r.data):,} bytes, but its {len(layers)} layers account for '
                    f'{r.offset:,}')
  return out


# -- Huffman coding -------------------------------------------------------------------


def huffman_lengths(counts: np.ndarray, limit: int = MAX_HUFFMAN_BITS) -> np.ndarray:
  """Code lengths of a Huffman code for symbol counts (0 for unused symbols); one used
  symbol gets length 1. Counts are halved until the longest code fits `limit`."""
  counts = np.asarray(counts, np.int64)
  while True:
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), np.int64)
    if len(used) == 1:
      lengths[used] = 1
    if len(used) <= 1:
      return lengths
    heap = [(int(counts[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    while len(heap) > 1:
      c1, k1, s1 = heapq.heappop(heap)
      c2, k2, s2 = heapq.heappop(heap)
      lengths[s1 + s2] += 1
      heapq.heappush(heap, (c1 + c2, min(k1, k2), s1 + s2))
    if lengths.max() <= limit:
      return lengths
    counts = np.where(counts > 0, (counts + 1) // 2, 0)


def _canonical(lengths: np.ndarray) -> dict[int, tuple[int, int]]:
  """symbol -> (code, length) of the canonical code (symbols by length, then value)."""
  code, previous, table = 0, 0, {}
  for s in sorted(np.flatnonzero(lengths), key=lambda s: (lengths[s], s)):
    code <<= int(lengths[s]) - previous
    table[int(s)] = (code, int(lengths[s]))
    previous = int(lengths[s])
    code += 1
  return table


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
  table = _canonical(lengths)
  codes = np.zeros(len(lengths), np.int64)
  sizes = np.zeros(len(lengths), np.int64)
  for s, (c, n) in table.items():
    codes[s], sizes[s] = c, n
  symbols = np.asarray(symbols, np.int64)
  width = int(sizes.max()) if len(table) else 1
  # Each symbol's code right-aligned in `width` bits, MSB first; its last `sizes` bits kept.
  bits = ((codes[symbols][:, None] >> np.arange(width - 1, -1, -1)) & 1).astype(np.uint8)
  keep = np.arange(width)[None, :] >= (width - sizes[symbols])[:, None]
  return np.packbits(bits[keep]).tobytes()


def huffman_decode(data: bytes, count: int, lengths: np.ndarray, what: str) -> np.ndarray:
  if count == 0:
    return np.zeros(0, np.int32)
  table = _canonical(np.asarray(lengths, np.int64))
  if not table:
    raise UserError(f'{what} is not a Huffman Deep Compression file: an empty code table')
  width = max(n for _, n in table.values())
  if width > MAX_HUFFMAN_BITS:
    raise UserError(f'{what}: a Huffman code of {width} bits (at most {MAX_HUFFMAN_BITS})')
  lookup_symbol = np.full(1 << width, -1, np.int64)
  lookup_length = np.zeros(1 << width, np.int64)
  for s, (c, n) in table.items():
    lo = c << (width - n)
    lookup_symbol[lo:lo + (1 << (width - n))] = s
    lookup_length[lo:lo + (1 << (width - n))] = n
  bits = np.unpackbits(np.frombuffer(data, np.uint8)).astype(np.int64)
  bits = np.concatenate([bits, np.zeros(width, np.int64)])
  # The `width`-bit window starting at every bit, then one table walk.
  windows = np.zeros(len(bits) - width + 1, np.int64)
  for j in range(width):
    windows = (windows << 1) | bits[j:len(bits) - width + 1 + j]
  symbols_at, lengths_at = lookup_symbol[windows].tolist(), lookup_length[windows].tolist()
  end = len(data) * 8
  out, pos = [], 0
  for _ in range(count):
    if pos >= end or symbols_at[pos] < 0:
      raise UserError(f'{what} is truncated or corrupt: a Huffman stream ends early')
    out.append(symbols_at[pos])
    pos += lengths_at[pos]
  if pos > end:
    raise UserError(f'{what} is truncated or corrupt: a Huffman stream ends early')
  return np.asarray(out, np.int32)
