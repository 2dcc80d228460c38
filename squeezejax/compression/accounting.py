"""Size accounting of a Deep Compression file, per layer and in total.

"By model size, we mean the number of bytes required to store all of the parameters"
(SqueezeNet, Table 2). Sizes are given in bytes, KiB, MiB and MB (10**6 bytes), and
as the paper's labels, which follow two conventions:

  * float32 models: MiB rounded up to two significant digits (4.76 MiB -> "4.8MB",
    `spec.paper_size_label`);
  * compressed models: KiB / 1000, rounded up to two significant digits. The authors'
    file is 675,763 bytes = 659.9 KiB, which their README calls "660KB" and the paper
    "0.66MB" (it is 0.676 MB and 0.644 MiB).

The per-layer table is that of the Deep Compression paper (Tables 4-6): weights,
density (kept / all), stored entries and fillers, bits per weight and per index
(the mean code length when Huffman coded), bytes, and the compression rate:
stored bits over the layer's float32 bits (weights and biases).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from squeezejax import spec as spec_lib
from squeezejax.compression import format as format_lib

FLOAT_BYTES = 4


@dataclasses.dataclass(frozen=True)
class LayerSize:
  name: str
  weights: int
  biases: int
  nonzero: int
  entries: int
  codebook_bytes: int
  bias_bytes: int
  code_bytes: int  # the code stream (with its Huffman table and size field, if any)
  index_bytes: int
  weight_bits: float  # per stored entry
  index_bits: float

  @property
  def fillers(self) -> int:
    return self.entries - self.nonzero

  @property
  def density(self) -> float:
    return self.nonzero / self.weights

  @property
  def bytes(self) -> int:
    return self.codebook_bytes + self.bias_bytes + self.code_bytes + self.index_bytes

  @property
  def rate(self) -> float:
    """Stored size over the float32 size of the layer's weights and biases."""
    return self.bytes / (FLOAT_BYTES * (self.weights + self.biases))


def _stream(symbols: np.ndarray, bits: int, huffman: bool) -> tuple[int, float]:
  """(bytes, mean bits per symbol) of one stream."""
  n = len(symbols)
  if not huffman:
    return format_lib.packed_bytes(n, bits), float(bits)
  counts = np.bincount(symbols, minlength=1 << bits)
  total_bits = int((counts * format_lib.huffman_lengths(counts)).sum())
  # + the table of code lengths and the uint32 stream size
  return -(-total_bits // 8) + (1 << bits) + 4, total_bits / max(n, 1)


def layer_sizes(encoded: Sequence[format_lib.Encoded], code_bits: int, index_bits: int,
                huffman: bool = False) -> list[LayerSize]:
  rows = []
  for e in encoded:
    code_bytes, wbits = _stream(e.codes, code_bits, huffman)
    index_bytes, ibits = _stream(e.indices, index_bits, huffman)
    rows.append(LayerSize(e.layer.name, e.layer.size, len(e.bias), e.nonzero, e.entries,
                          FLOAT_BYTES << code_bits, FLOAT_BYTES * len(e.bias), code_bytes,
                          index_bytes, wbits, ibits))
  return rows


def file_bytes(rows: Sequence[LayerSize]) -> int:
  """The whole file: the uint32 header (one count per layer) and every layer."""
  return 4 * len(rows) + sum(r.bytes for r in rows)


def paper_label_mb(nbytes: int, compressed: bool = True) -> float:
  """The paper's "MB" label of a size (see the module docstring)."""
  if compressed:
    return spec_lib.paper_size_label(nbytes / 1024 / 1000)
  return spec_lib.paper_size_label(nbytes / 2**20)


def sizes(nbytes: int, compressed: bool = True) -> dict[str, float]:
  return {'bytes': int(nbytes), 'kib': nbytes / 1024, 'mib': nbytes / 2**20,
          'mb': nbytes / 1e6, 'label_mb': paper_label_mb(nbytes, compressed)}


def summary(rows: Sequence[LayerSize]) -> dict:
  """Totals: file size in every unit, the float32 size, density and reduction."""
  weights = sum(r.weights for r in rows)
  params = weights + sum(r.biases for r in rows)
  nbytes = file_bytes(rows)
  float_bytes = FLOAT_BYTES * params
  return {
      **sizes(nbytes), 'float32': sizes(float_bytes, compressed=False),
      'weights': weights, 'params': params, 'nonzero': sum(r.nonzero for r in rows),
      'density': sum(r.nonzero for r in rows) / weights,
      'entries': sum(r.entries for r in rows), 'fillers': sum(r.fillers for r in rows),
      'reduction': float_bytes / nbytes,
      'layers': [{**dataclasses.asdict(r), 'fillers': r.fillers, 'density': r.density,
                  'bytes': r.bytes, 'rate': r.rate} for r in rows]}


def table(rows: Sequence[LayerSize]) -> str:
  """The per-layer Markdown table with its totals line."""
  lines = ['| layer | weights | density | entries | fillers | weight bits | index bits | '
           'bytes | rate |', '|---|--:|--:|--:|--:|--:|--:|--:|--:|']
  for r in rows:
    lines.append(f'| {r.name} | {r.weights:,} | {100 * r.density:.1f}% | {r.entries:,} | '
                 f'{r.fillers:,} | {r.weight_bits:.2f} | {r.index_bits:.2f} | {r.bytes:,} | '
                 f'{100 * r.rate:.2f}% |')
  s = summary(rows)
  entries = max(s['entries'], 1)
  wbits = sum(r.weight_bits * r.entries for r in rows) / entries
  ibits = sum(r.index_bits * r.entries for r in rows) / entries
  lines.append(f'| **total** | **{s["weights"]:,}** | **{100 * s["density"]:.1f}%** | '
               f'**{s["entries"]:,}** | **{s["fillers"]:,}** | **{wbits:.2f}** | '
               f'**{ibits:.2f}** | **{s["bytes"]:,}** | **{100 / s["reduction"]:.2f}%** |')
  f32 = s['float32']
  lines += ['', f'file {s["bytes"]:,} bytes = {s["kib"]:.1f} KiB = {s["mib"]:.3f} MiB = '
            f'{s["mb"]:.3f} MB (paper label {s["label_mb"]:g}MB, header included); '
            f'float32 {f32["bytes"]:,} bytes ({f32["mib"]:.2f} MiB, label '
            f'{f32["label_mb"]:g}MB): {s["reduction"]:.1f}x smaller']
  return '\n'.join(lines)
