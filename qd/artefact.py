"""The compressed model file: Huffman-coded level indices, scales, grids and fp tensors (notes 1.9).

The paper's size is analytic: ``4 N_fp + b_eff N_q / 8 + 8 n_buckets`` bytes, with ``b_eff`` the mean
length of *one* Huffman code built over the level indices of all quantized tensors pooled. This module
writes that model for real, so the reported size is bytes on disk and the file loads back to the very
weights that were evaluated:

* one canonical Huffman code over the pooled level indices (``qd.size.huffman_code_lengths``); only the
  code lengths are stored, the codes are rebuilt from them (canonical codes, as DEFLATE does);
* per quantized tensor: its bit-packed index stream (exactly ``b_eff`` bits per weight on average, plus
  at most 7 bits of padding) and what its layout (``qd.quantizers.layouts``) needs to decode it:
  ``minmax``: per-bucket ``lo`` and ``hi`` (min and max, what ``qd.quant.decode`` reads) in the
  tensor's float dtype (fp32 for an fp32 model: the paper's 8 bytes per bucket) and its grid (nothing
  but ``bits`` for the uniform grid, the points themselves for a non-uniform one); ``affine`` and
  ``step``: the grouping, the integer level range, a scale per group and (affine) a zero point per
  group, each in its own dtype; ``codebook``: the table of values;
* every other state-dict entry (fp32 parameters, BatchNorm buffers) as raw bytes with dtype and shape.

Layout (integers little-endian)::

    prefix   magic (8 bytes) | format version u16 | payload length u64 | sha256 of the payload (32)
    payload  header JSON: u32 length, UTF-8
             code table: u32 symbols, u8 code length per symbol, u32 sole symbol (or NO_SYMBOL)
             u32 entries, each: u8 kind | u16 name length, name | u8 dtype | u8 ndim, u64 dims
               fp entry (kind 0):      raw bytes (numel x itemsize)
               minmax entry (kind 1):  u64 n | u32 bucket size (0 = one bucket) | u8 flags | u8 grid dtype
                                       grid: u8 bits (uniform) or u32 points + points | u64 buckets, lo, hi
               affine (2), step (3):   u64 n | u8 axis + 1 (0 = flat buckets) | u32 bucket size (0 = one
                                       bucket) | i32 quant_min | u32 levels | u8 scale dtype | u64 groups,
                                       scales | affine only: u8 zero-point dtype, zero points
               codebook (4):           u64 n | u32 values, values (in the entry's dtype)
               every quantized entry then: u64 stream bits, stream bytes

Format version 1 has kinds 0 and 1 only; version 2 adds kinds 2-4. A file is written with the lowest
version that holds its entries, so models of the paper's methods are byte for byte what version 1
wrote, and every version-1 file loads.

Encoding and decoding are vectorised over symbols (numpy), never a Python loop per symbol: codewords
are shifted into place and summed into u64 words; decoding runs many segments of the stream in
lockstep and stitches them where Huffman codes resynchronise (:func:`huffman_decode`). About 0.1 s
per million weights each way on one CPU core.

Exercise it with ``pytest tests/test_artefact.py``.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from qd.errors import QdError
from qd.io import atomic_write_bytes
from qd.quant import uniform_grid
from qd.quantizers.layouts import (AFFINE, CODEBOOK, MINMAX, STEP, QuantCodes, decode, integer_codes,
                                    layout_of, n_groups)
from qd.size import huffman_code_lengths, level_counts

MAGIC = b"\x89QDA\r\n\x1a\n"  # PNG-style: a non-ASCII byte, CRLF and ^Z catch text-mode mangling
FORMAT_VERSION = 2  # the newest this module writes and reads
_PREFIX = struct.Struct("<8sHQ32s")  # magic, version, payload length, sha256 of the payload
NO_SYMBOL = 0xFFFFFFFF
# Code lengths up to 57 bits keep a codeword plus the 7-bit offset inside a byte within one u64 word.
# A Huffman code that long needs more than Fibonacci(59) ~ 1e12 weights.
MAX_CODE_LENGTH = 57

KIND_FP, KIND_QUANTIZED = 0, 1  # KIND_QUANTIZED: minmax codes, the only quantized kind of version 1
KIND_AFFINE, KIND_STEP, KIND_CODEBOOK = 2, 3, 4
_LAYOUT_KINDS = {MINMAX: KIND_QUANTIZED, AFFINE: KIND_AFFINE, STEP: KIND_STEP, CODEBOOK: KIND_CODEBOOK}
_KIND_LAYOUTS = {k: name for name, k in _LAYOUT_KINDS.items()}
_FIRST_VERSION = {KIND_FP: 1, KIND_QUANTIZED: 1, KIND_AFFINE: 2, KIND_STEP: 2, KIND_CODEBOOK: 2}
FLAG_UNIFORM, FLAG_EXPLICIT_GRID = 1, 2
# Append-only: the index of a dtype is part of the format.
DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int32,
          torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64, torch.complex128)


class ArtefactError(QdError, ValueError):
    """The file is not a readable artefact of this format (wrong magic, truncated, corrupted, too new)."""


# ---------------------------------------------------------------------------------------------------
# canonical Huffman code


@dataclass(frozen=True)
class CanonicalCode:
    """A canonical prefix code given by its code lengths (``0`` = symbol unused).

    Codes of equal length are consecutive integers in symbol order, and left-justified to the longest
    length they increase with length; decoding therefore needs only ``limits`` (one per used length)
    to tell a codeword's length from the next ``max_length`` bits.
    """

    lengths: np.ndarray  # (n_symbols,) uint8
    codes: np.ndarray  # (n_symbols,) uint64
    used_lengths: np.ndarray  # sorted distinct code lengths > 0
    first_code: np.ndarray  # first code of each used length
    base: np.ndarray  # index in ``sorted_symbols`` of each used length's first symbol
    limits: np.ndarray  # exclusive upper end of each used length's codes, left-justified
    sorted_symbols: np.ndarray  # symbols ordered by (length, symbol)
    sole_symbol: int | None  # the only used symbol when one symbol has all the weight (0-bit code)

    @property
    def max_length(self) -> int:
        return int(self.used_lengths[-1]) if self.used_lengths.size else 0


def canonical_code(lengths, sole_symbol: int | None = None) -> CanonicalCode:
    """The canonical code with the given code lengths (DEFLATE's construction, RFC 1951 3.2.2)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.min() < 0 or lengths.max() > MAX_CODE_LENGTH):
        raise ValueError(f"code lengths must lie in 0..{MAX_CODE_LENGTH}, got {lengths.min()}..{lengths.max()}")
    used = np.flatnonzero(lengths)
    order = used[np.lexsort((used, lengths[used]))]
    used_lengths, counts = np.unique(lengths[order], return_counts=True)
    if used_lengths.size:
        kraft = sum(int(c) << int(used_lengths[-1] - l) for l, c in zip(used_lengths, counts))
        if kraft != 1 << int(used_lengths[-1]):
            raise ValueError("code lengths do not form a complete prefix code (Kraft sum != 1)")
    first, base, limits = [], [], []
    code, prev_len, start = 0, 0, 0
    max_len = int(used_lengths[-1]) if used_lengths.size else 0
    for length, count in zip(used_lengths.tolist(), counts.tolist()):
        code <<= length - prev_len
        first.append(code)
        base.append(start)
        limits.append((code + count) << (max_len - length))
        code, prev_len, start = code + count, length, start + count
    codes = np.zeros(lengths.size, dtype=np.uint64)
    if order.size:
        group = np.repeat(np.arange(used_lengths.size), counts)
        rank = np.arange(order.size) - np.asarray(base, dtype=np.int64)[group]
        codes[order] = (np.asarray(first, dtype=np.uint64)[group] + rank.astype(np.uint64))
    return CanonicalCode(lengths.astype(np.uint8), codes, used_lengths, np.asarray(first, dtype=np.uint64),
                         np.asarray(base, dtype=np.int64), np.asarray(limits, dtype=np.uint64), order,
                         sole_symbol)


def pooled_code(codes: Mapping[str, QuantCodes]) -> CanonicalCode:
    """One Huffman code over the level indices of every quantized tensor (the paper's size accounting)."""
    counts = level_counts(codes) if codes else torch.zeros(1, dtype=torch.long)
    lengths = huffman_code_lengths(counts.tolist())
    used = torch.nonzero(counts).flatten().tolist()
    return canonical_code(lengths, sole_symbol=used[0] if len(used) == 1 else None)


# Work in blocks of this many elements or stream bits: temporaries of a few MB are recycled by the
# allocator, whereas fresh arrays of hundreds of MB cost more in page faults than in arithmetic.
_BLOCK = 1 << 20  # elements encoded per block
_DECODE_BLOCK_BITS = 1 << 22  # stream bits decoded per block of segments


def huffman_encode(indices: np.ndarray, code: CanonicalCode) -> tuple[bytes, int]:
    """The bit-packed code stream of ``indices`` (MSB first) and its length in bits.

    Built 64 bits at a time: each codeword is shifted to its place in the u64 word where it starts
    (and the word after, when it straddles the boundary). Codewords inside one word occupy disjoint
    bits, so a segmented *sum* over each word's codewords is their bitwise OR.
    """
    indices = np.asarray(indices).reshape(-1)
    n_bits = int(np.bincount(indices, minlength=code.lengths.size) @ code.lengths.astype(np.int64))
    if n_bits == 0:
        return b"", 0
    words = np.zeros((n_bits + 63) // 64 + 1, dtype=np.uint64)
    offset = 0  # stream bit where the block starts
    for lo in range(0, indices.size, _BLOCK):
        block = indices[lo:lo + _BLOCK]
        lens = code.lengths[block].astype(np.int64)
        starts = np.cumsum(lens) - lens + offset
        offset += int(lens.sum())
        used = lens > 0  # zero-length codewords (a one-symbol code) emit nothing
        values, lens, starts = code.codes[block[used]], lens[used], starts[used]
        word = starts >> 6
        end_in_word = starts - (word << 6) + lens  # 1 .. 64 + 56
        fits = end_in_word <= 64
        placed = np.where(fits, values << (64 - np.minimum(end_in_word, 64)).astype(np.uint64),
                          values >> (np.maximum(end_in_word, 64) - 64).astype(np.uint64))
        first = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
        # OR, not assignment: the block's first word may already hold the previous block's last bits
        words[word[first]] |= np.add.reduceat(placed, first)
        spill = ~fits  # at most one codeword crosses each word boundary
        words[word[spill] + 1] |= values[spill] << (128 - end_in_word[spill]).astype(np.uint64)
    return words.byteswap().tobytes()[: (n_bits + 7) // 8], n_bits


_LUT_MAX_WIDTH = 16  # up to this code length, a table indexed by the next bits gives symbol and length
_OVERLAP_CODEWORDS = 32  # how far (in longest codewords) each lane decodes into the next segment
_SEGMENT_OVERLAPS = 8  # segment length in overlaps


class _CodewordReader:
    """Symbol and length of the codeword that starts at each given bit position (vectorised).

    Reads through a window of u64 words (one per byte) over the part of the stream being decoded.
    """

    def __init__(self, stream: bytes, code: CanonicalCode):
        self.stream, self.code, self.width = stream, code, code.max_length
        self.table = _lookup(code, np.arange(1 << self.width, dtype=np.uint64)) \
            if self.width <= _LUT_MAX_WIDTH else None

    def focus(self, first_bit: int, last_bit: int) -> None:
        """Prepare to read codewords starting in ``[first_bit, last_bit)``."""
        self.base = first_bit >> 3
        self.words = _words_at_every_byte(self.stream[self.base:(last_bit >> 3) + 1])

    def read(self, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # a finished lane points past the window and reads its last word: harmless, dropped later
        at = np.minimum((pos >> 3) - self.base, self.words.size - 1)
        window = (self.words[at] << (pos & 7).astype(np.uint64)) >> np.uint64(64 - self.width)
        if self.table is None:
            return _lookup(self.code, window)
        i = window.astype(np.intp)
        return self.table[0][i], self.table[1][i]


def _lookup(code: CanonicalCode, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symbol and code length of each ``max_length``-bit window (canonical decoding by range)."""
    group = np.searchsorted(code.limits, window, side="right")
    length = code.used_lengths[group]
    offset = (window >> (np.uint64(code.max_length) - length.astype(np.uint64))) - code.first_code[group]
    return code.sorted_symbols[code.base[group] + offset.astype(np.int64)], length.astype(np.int64)


def _words_at_every_byte(stream: bytes) -> np.ndarray:
    """The big-endian u64 starting at each byte of ``stream`` (zero-padded past its end)."""
    buf = np.frombuffer(stream + bytes(16), dtype=np.uint8)
    n = len(stream)
    words = np.empty(n, dtype=np.uint64)
    for r in range(8):
        k = (n - r + 7) // 8  # offsets r, r + 8, ... below n
        if k > 0:
            words[r::8] = buf[r:r + 8 * k].view(">u8")
    return words


_PAST = np.iinfo(np.int64).max // 2  # a position past every segment: marks unused matrix cells


def _decode_lanes(reader: _CodewordReader, origin: np.ndarray, until: np.ndarray):
    """Decode every lane from ``origin`` until its position reaches ``until``, all lanes in lockstep.

    Returns ``(positions, symbols)`` as ``(lanes, steps)`` matrices; cells past a lane's end hold
    a position ``>= until`` (a finished lane repeats its last position), so masks drop them.
    """
    pos = origin.astype(np.int64)
    steps_pos, steps_sym = [], []
    live = pos < until
    while live.any():
        sym, length = reader.read(pos)
        steps_pos.append(pos)
        steps_sym.append(sym)
        pos = pos + length * live
        live = pos < until
    if not steps_pos:
        return np.full((origin.size, 1), _PAST), np.zeros((origin.size, 1), np.int64)
    return np.stack(steps_pos, axis=1), np.stack(steps_sym, axis=1)


def _firsts(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """The first value of each group (``groups`` sorted), -1 for an empty group."""
    out = np.full(n_groups, -1, dtype=np.int64)
    g, first = np.unique(groups, return_index=True)
    out[g] = values[first]
    return out


def _replace_rows(matrix: np.ndarray, rows: np.ndarray, new: np.ndarray, fill) -> np.ndarray:
    """``matrix`` with ``rows`` replaced by ``new`` (widened, and padded with ``fill``, as needed)."""
    width = max(matrix.shape[1], new.shape[1])
    if width > matrix.shape[1]:
        wider = np.full((matrix.shape[0], width), fill, dtype=matrix.dtype)
        wider[:, :matrix.shape[1]] = matrix
        matrix = wider
    matrix[rows] = fill
    matrix[rows, :new.shape[1]] = new
    return matrix


def _decode_segments(reader: _CodewordReader, start, end, until, carry):
    """The true codewords of consecutive segments ``[start_k, end_k)``.

    Lane ``k`` decodes from ``start_k`` (generally not a codeword boundary) on to ``until_k``, into the
    next segment. ``carry`` holds the true codewords the lane before this block read into segment 0
    (``None``: segment 0 starts at a codeword boundary). Huffman codes resynchronise within a few
    codewords, so the true codewords read on from segment ``k - 1`` soon land on a position lane ``k``
    visited too (the *merge*); from there on lane ``k`` is on the true path. A lane without a merge is
    decoded again from its true entry; the first such lane always has a true predecessor, so each
    round fixes at least one lane. Returns positions and symbols, and the carry for the next block.
    """
    n_lanes = start.size
    pos, sym = _decode_lanes(reader, start, until)
    carry_pos, carry_sym = carry if carry is not None else (np.zeros(0, np.int64),) * 2
    while True:
        own = pos < end[:, None]
        read_on = ~own & (pos < until[:, None])
        inside = pos[own]  # each lane's codewords inside its own segment, lane after lane: sorted
        spill = np.concatenate([carry_pos, pos[read_on]])  # codewords read on into segment ``into``
        into = np.concatenate([np.zeros(carry_pos.size, np.int64), np.nonzero(read_on)[0] + 1])
        here = into < n_lanes  # the last lane reads on into the next block
        at = np.minimum(np.searchsorted(inside, spill), max(inside.size - 1, 0))
        hit = here & (inside[at] == spill) if inside.size else np.zeros(spill.size, dtype=bool)
        merge = _firsts(into[hit], spill[hit], n_lanes)
        if carry is None:
            merge[0] = start[0]
        stray = np.flatnonzero(merge < 0)
        if stray.size == 0:
            break
        entry = _firsts(into[here], spill[here], n_lanes)[stray]  # first true codeword of the segment
        if (entry < 0).any():
            raise ValueError("a segment holds no codeword boundary: the stream is malformed")
        p, y = _decode_lanes(reader, entry, until[stray])
        pos, sym = _replace_rows(pos, stray, p, _PAST), _replace_rows(sym, stray, y, 0)
    # segment k: the codewords read on from segment k - 1 before the merge, then lane k's own
    take_own = own & (pos >= merge[:, None])
    positions, symbols = pos[take_own], sym[take_own]
    spill_sym = np.concatenate([carry_sym, sym[read_on]])
    take_spill = here & (spill < merge[np.minimum(into, n_lanes - 1)])
    at = np.searchsorted(positions, spill[take_spill])  # few: the codewords before each merge
    positions = np.insert(positions, at, spill[take_spill])
    symbols = np.insert(symbols, at, spill_sym[take_spill])
    return positions, symbols, (spill[~here], spill_sym[~here])


def huffman_decode(stream: bytes, n_bits: int, n: int, code: CanonicalCode) -> np.ndarray:
    """The ``n`` symbols coded in the first ``n_bits`` bits of ``stream`` (int64).

    Vectorised over codewords: the stream is cut into short segments decoded in lockstep, one numpy
    operation per codeword for all segments of a block (:func:`_decode_segments`), so the cost is
    linear in the number of symbols. The result is checked to tile the stream exactly.
    Raises ``ValueError`` when the stream does not hold exactly ``n`` codewords in ``n_bits`` bits.
    """
    if n == 0:
        if n_bits:
            raise ValueError(f"an empty tensor with a {n_bits}-bit stream")
        return np.zeros(0, dtype=np.int64)
    if code.sole_symbol is not None or code.max_length == 0:
        if n_bits or code.sole_symbol is None:
            raise ValueError("a one-symbol code must have an empty stream and a recorded symbol")
        return np.full(n, code.sole_symbol, dtype=np.int64)
    if n_bits > 8 * len(stream) or n_bits < n:
        raise ValueError(f"{n} symbols cannot be coded in {n_bits} bits of a {len(stream)}-byte stream")
    reader = _CodewordReader(stream, code)
    overlap = _OVERLAP_CODEWORDS * code.max_length
    segment = _SEGMENT_OVERLAPS * overlap  # reading on into the next segment costs 1 / this more
    n_lanes = max(1, n_bits // segment)
    start = np.arange(n_lanes, dtype=np.int64) * n_bits // n_lanes
    end = np.append(start[1:], n_bits)
    until = np.minimum(end + overlap, n_bits)
    lanes_per_block = max(1, _DECODE_BLOCK_BITS // segment)
    out = np.empty(n, dtype=np.int64)
    done, next_bit, carry = 0, 0, None
    for b in range(0, n_lanes, lanes_per_block):
        block = slice(b, b + lanes_per_block)
        reader.focus(int(start[b]), int(until[block][-1]) + code.max_length)
        positions, symbols, carry = _decode_segments(reader, start[block], end[block], until[block], carry)
        next_bit = _check_tiling(positions, symbols, next_bit, code)
        if done + symbols.size > n:
            raise ValueError(f"the stream holds more than {n} codewords")
        out[done:done + symbols.size] = symbols
        done += symbols.size
    if done != n or next_bit != n_bits:
        raise ValueError(f"the stream holds {done} codewords ending at bit {next_bit}, "
                         f"{n} expected ending at bit {n_bits}")
    return out


def _check_tiling(positions: np.ndarray, symbols: np.ndarray, first_bit: int, code: CanonicalCode) -> int:
    """The codewords must follow each other from ``first_bit`` on; returns the bit after the last."""
    if positions.size == 0:
        raise ValueError(f"no codeword found from bit {first_bit}")
    ends = positions + code.lengths[symbols].astype(np.int64)
    if positions[0] != first_bit or not np.array_equal(positions[1:], ends[:-1]):
        raise ValueError(f"the codewords do not tile the stream from bit {first_bit}")
    return int(ends[-1])


# ---------------------------------------------------------------------------------------------------
# byte-level writing and reading


class _Writer:
    """Collects the payload, remembering how many bytes each part of the model takes."""

    def __init__(self):
        self.parts: list[bytes] = []
        self.sections: dict[str, int] = {}

    def put(self, section: str, data: bytes) -> None:
        self.parts.append(data)
        self.sections[section] = self.sections.get(section, 0) + len(data)

    def pack(self, section: str, fmt: str, *values) -> None:
        self.put(section, struct.pack("<" + fmt, *values))

    def name(self, section: str, text: str) -> None:
        raw = text.encode()
        self.pack(section, "H", len(raw))
        self.put(section, raw)


class _Reader:
    def __init__(self, data: memoryview):
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise ValueError(f"an entry runs past the end of the payload (byte {self.at} + {n})")
        out = bytes(self.data[self.at:self.at + n])
        self.at += n
        return out

    def unpack(self, fmt: str):
        values = self.unpack_tuple(fmt)
        return values[0] if len(values) == 1 else values

    def unpack_tuple(self, fmt: str) -> tuple:
        s = struct.Struct("<" + fmt)
        return s.unpack(self.take(s.size))

    def name(self) -> str:
        return self.take(self.unpack("H")).decode()


def _dtype_code(dtype: torch.dtype) -> int:
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype} cannot be stored; supported: {[str(d) for d in DTYPES]}")
    return DTYPES.index(dtype)


def _dtype(code: int) -> torch.dtype:
    if code >= len(DTYPES):
        raise ValueError(f"unknown dtype code {code}")
    return DTYPES[code]


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty(0, dtype=dtype).element_size()


def _raw(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _tensor(raw: bytes, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if not raw:
        return torch.empty(shape, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)


def _put_tensor_head(w: _Writer, kind: int, name: str, dtype: torch.dtype, shape) -> None:
    w.pack("tensor_metadata", "B", kind)
    w.name("tensor_metadata", name)
    w.pack("tensor_metadata", "BB", _dtype_code(dtype), len(shape))
    w.pack("tensor_metadata", f"{len(shape)}Q", *shape)


def _implicit_bits(c: QuantCodes) -> int | None:
    """``bits`` when the grid is exactly ``uniform_grid(bits)`` (then only ``bits`` is stored)."""
    n = c.grid.numel()
    bits = n.bit_length() - 1
    if not c.uniform or n < 2 or n != 1 << bits or bits > 16:
        return None
    same = torch.equal(c.grid.detach().cpu(), uniform_grid(bits, dtype=c.grid.dtype))
    return bits if same else None


def _put_quantized(w: _Writer, name: str, c: QuantCodes, code: CanonicalCode) -> None:
    n = c.indices.numel()
    if n != math.prod(c.shape):
        raise ValueError(f"{name}: {n} level indices for shape {tuple(c.shape)}")
    if c.lo.dtype != c.hi.dtype or c.lo.numel() != c.hi.numel():
        raise ValueError(f"{name}: lo and hi must have one dtype and one value per bucket")
    indices = c.indices.detach().cpu().reshape(-1).numpy().astype(np.int64, copy=False)
    if n and (indices.min() < 0 or indices.max() >= c.grid.numel()):
        raise ValueError(f"{name}: level indices outside the {c.grid.numel()}-level grid")
    kind = _LAYOUT_KINDS[layout_of(c.layout).name]
    _put_tensor_head(w, kind, name, c.dtype, c.shape)
    if kind == KIND_QUANTIZED:
        _put_minmax(w, c)
    elif kind == KIND_CODEBOOK:
        _put_codebook(w, name, c)
    else:
        _put_integer(w, name, c)
    stream, n_bits = huffman_encode(indices, code)
    w.pack("index_streams", "Q", n_bits)
    w.put("index_streams", stream)


def _put_minmax(w: _Writer, c: QuantCodes) -> None:
    bits = _implicit_bits(c)
    flags = (FLAG_UNIFORM if c.uniform else 0) | (0 if bits is not None else FLAG_EXPLICIT_GRID)
    w.pack("tensor_metadata", "QIBB", c.indices.numel(), c.bucket_size or 0, flags, _dtype_code(c.grid.dtype))
    if bits is not None:
        w.pack("grids", "B", bits)
    else:
        w.pack("grids", "I", c.grid.numel())
        w.put("grids", _raw(c.grid))
    w.pack("bucket_scales", "Q", c.lo.numel())
    w.put("bucket_scales", _raw(c.lo))
    w.put("bucket_scales", _raw(c.hi))


def _put_integer(w: _Writer, name: str, c: QuantCodes) -> None:
    groups = n_groups(tuple(c.shape), c.axis, c.bucket_size)
    if c.scale.numel() != groups or (c.zero_point is not None and c.zero_point.numel() != groups):
        raise ValueError(f"{name}: {c.layout} codes of shape {tuple(c.shape)} need {groups} scales"
                         + (" and zero points" if c.zero_point is not None else ""))
    w.pack("tensor_metadata", "QBIiI", c.indices.numel(), 0 if c.axis is None else c.axis + 1,
           c.bucket_size or 0, c.quant_min, c.n_levels)
    w.pack("bucket_scales", "BQ", _dtype_code(c.scale.dtype), groups)
    w.put("bucket_scales", _raw(c.scale))
    if c.zero_point is not None:
        w.pack("bucket_scales", "B", _dtype_code(c.zero_point.dtype))
        w.put("bucket_scales", _raw(c.zero_point))


def _put_codebook(w: _Writer, name: str, c: QuantCodes) -> None:
    if c.grid.dtype != c.dtype:
        raise ValueError(f"{name}: codebook values of dtype {c.grid.dtype} for a {c.dtype} tensor")
    w.pack("tensor_metadata", "Q", c.indices.numel())
    w.pack("grids", "I", c.grid.numel())
    w.put("grids", _raw(c.grid))


def _get_quantized(r: _Reader, kind: int, dtype: torch.dtype, shape: tuple, code: CanonicalCode) -> QuantCodes:
    n = r.unpack("Q")
    if n != math.prod(shape):
        raise ValueError(f"{n} elements recorded for shape {shape}")
    if kind == KIND_QUANTIZED:
        make = _get_minmax(r, dtype, shape)
    elif kind == KIND_CODEBOOK:
        make = _get_codebook(r, dtype, shape)
    else:
        make = _get_integer(r, kind, dtype, shape)
    n_bits = r.unpack("Q")
    stream = r.take((n_bits + 7) // 8)
    indices = torch.from_numpy(huffman_decode(stream, n_bits, n, code))
    codes = make(indices)
    if n and int(indices.max()) >= codes.n_levels:
        raise ValueError(f"a level index beyond the {codes.n_levels}-level grid")
    return codes


def _get_minmax(r: _Reader, dtype: torch.dtype, shape: tuple):
    bucket, flags, grid_code = r.unpack("IBB")
    grid_dtype = _dtype(grid_code)
    if flags & FLAG_EXPLICIT_GRID:
        n_points = r.unpack("I")
        grid = _tensor(r.take(n_points * _itemsize(grid_dtype)), grid_dtype, (n_points,))
    else:
        grid = uniform_grid(r.unpack("B"), dtype=grid_dtype)
    n_buckets = r.unpack("Q")
    size = n_buckets * _itemsize(dtype)
    lo = _tensor(r.take(size), dtype, (n_buckets,))
    hi = _tensor(r.take(size), dtype, (n_buckets,))
    return lambda indices: QuantCodes(indices=indices, lo=lo, hi=hi, grid=grid, bucket_size=bucket or None,
                                      shape=tuple(shape), uniform=bool(flags & FLAG_UNIFORM), layout=MINMAX)


def _get_integer(r: _Reader, kind: int, dtype: torch.dtype, shape: tuple):
    axis_code, bucket, quant_min, n_levels = r.unpack("BIiI")
    axis = axis_code - 1 if axis_code else None
    if axis is not None and (axis >= len(shape) or bucket):
        raise ValueError(f"axis {axis} with bucket size {bucket} for shape {shape}")
    if n_levels < 2:
        raise ValueError(f"{n_levels} integer levels (at least 2 expected)")
    scale_dtype, groups = r.unpack("BQ")
    scale_dtype = _dtype(scale_dtype)
    if groups != n_groups(tuple(shape), axis, bucket or None):
        raise ValueError(f"{groups} scale groups recorded for shape {shape}, axis {axis}, bucket size {bucket}")
    scale = _tensor(r.take(groups * _itemsize(scale_dtype)), scale_dtype, (groups,))
    zero_point = None
    if kind == KIND_AFFINE:
        zp_dtype = _dtype(r.unpack("B"))
        zero_point = _tensor(r.take(groups * _itemsize(zp_dtype)), zp_dtype, (groups,))
    return lambda indices: integer_codes(indices + quant_min, scale, zero_point, quant_min,
                                         quant_min + n_levels - 1, tuple(shape), dtype, axis, bucket or None)


def _get_codebook(r: _Reader, dtype: torch.dtype, shape: tuple):
    n_values = r.unpack("I")
    values = _tensor(r.take(n_values * _itemsize(dtype)), dtype, (n_values,))
    empty = torch.empty(0, dtype=dtype)
    return lambda indices: QuantCodes(indices=indices, lo=empty, hi=empty.clone(), grid=values, bucket_size=None,
                                      shape=tuple(shape), uniform=False, layout=CODEBOOK)


def _payload(state_dict: Mapping[str, torch.Tensor], codes: Mapping[str, QuantCodes], header: dict) -> _Writer:
    if not isinstance(header, dict):
        raise TypeError(f"header must be a JSON-able dict, got {type(header).__name__}")
    w = _Writer()
    raw_header = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    w.pack("header", "I", len(raw_header))
    w.put("header", raw_header)
    code = pooled_code(codes)
    w.pack("code_table", "I", code.lengths.size)
    w.put("code_table", code.lengths.tobytes())
    w.pack("code_table", "I", NO_SYMBOL if code.sole_symbol is None else code.sole_symbol)
    names = list(state_dict) + [n for n in codes if n not in state_dict]
    w.pack("tensor_metadata", "I", len(names))
    for name in names:
        if name in codes:
            _put_quantized(w, name, codes[name], code)
        else:
            t = state_dict[name]
            _put_tensor_head(w, KIND_FP, name, t.dtype, tuple(t.shape))
            w.put("fp_tensors", _raw(t))
    return w


def file_version(codes: Mapping[str, QuantCodes]) -> int:
    """The lowest format version that holds these codes (1 unless a layout other than minmax is used)."""
    return max((_FIRST_VERSION[_LAYOUT_KINDS[layout_of(c.layout).name]] for c in codes.values()), default=1)


def _prefix(payload: bytes, version: int) -> bytes:
    return _PREFIX.pack(MAGIC, version, len(payload), hashlib.sha256(payload).digest())


# ---------------------------------------------------------------------------------------------------
# public API


def artefact_size(state_dict: Mapping[str, torch.Tensor], codes: Mapping[str, QuantCodes],
                  header: dict | None = None) -> dict[str, int]:
    """Bytes the artefact would take, in total and by part (``index_streams``, ``bucket_scales``, ...)."""
    w = _payload(state_dict, codes, header or {})
    return {"prefix": _PREFIX.size, **w.sections, "total": _PREFIX.size + sum(w.sections.values())}


def export_artefact(path: str | Path, state_dict: Mapping[str, torch.Tensor], codes: Mapping[str, QuantCodes],
                    header: dict | None = None) -> int:
    """Write the compressed model to ``path`` (atomically) and return the number of bytes written.

    ``codes`` are the quantized tensors by state-dict name (their state-dict values are not stored:
    the file holds the codes); every other ``state_dict`` entry is stored as is. ``header`` is a
    small JSON-able dict, e.g. the model's config, returned unchanged by :func:`load_artefact`.
    """
    payload = b"".join(_payload(state_dict, codes, header or {}).parts)
    data = _prefix(payload, file_version(codes)) + payload
    atomic_write_bytes(data, path)
    return len(data)


def load_artefact(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, QuantCodes], dict]:
    """``(state_dict, codes, header)`` from an artefact file.

    The state dict holds the decoded quantized weights (``qd.quant.decode`` of the returned codes) and
    every full-precision tensor, in the order they were exported. Raises :class:`ArtefactError` naming
    the file and the problem when it is not a complete, uncorrupted artefact this reader understands.
    """
    path = Path(path)
    data = path.read_bytes()
    payload, version = _checked_payload(path, data)
    try:
        return _parse(memoryview(payload), version)
    except (ValueError, RuntimeError, struct.error) as e:
        # the checksum matched, so this is a writer bug or a forged file: still never half-load it
        raise ArtefactError(f"{path}: malformed artefact payload: {e}") from e


def _checked_payload(path: Path, data: bytes) -> tuple[bytes, int]:
    if len(data) < len(MAGIC) and MAGIC.startswith(data):
        raise ArtefactError(f"{path}: truncated: {len(data)} bytes, not even the magic bytes")
    if len(data) < len(MAGIC) or data[:len(MAGIC)] != MAGIC:
        raise ArtefactError(f"{path}: not a qd model artefact (starts with {data[:len(MAGIC)]!r}, "
                            f"expected magic bytes {MAGIC!r})")
    if len(data) < _PREFIX.size:
        raise ArtefactError(f"{path}: truncated: {len(data)} bytes, shorter than the {_PREFIX.size}-byte prefix")
    _, version, length, digest = _PREFIX.unpack_from(data)
    if version > FORMAT_VERSION:
        raise ArtefactError(f"{path}: format version {version} is newer than this reader "
                            f"(reads up to version {FORMAT_VERSION}); update qd-repro to load it")
    if version < 1:
        raise ArtefactError(f"{path}: invalid format version {version}")
    actual = len(data) - _PREFIX.size
    if actual < length:
        raise ArtefactError(f"{path}: truncated: payload has {actual} of {length} bytes")
    if actual > length:
        raise ArtefactError(f"{path}: {actual - length} unexpected bytes after the {length}-byte payload")
    payload = data[_PREFIX.size:]
    if hashlib.sha256(payload).digest() != digest:
        raise ArtefactError(f"{path}: checksum mismatch: the payload is corrupted "
                            f"(sha256 {hashlib.sha256(payload).hexdigest()[:16]}..., "
                            f"recorded {digest.hex()[:16]}...)")
    return payload, version


def _parse(payload: memoryview, version: int = FORMAT_VERSION) -> tuple[dict, dict, dict]:
    r = _Reader(payload)
    header = json.loads(r.take(r.unpack("I")).decode())
    n_symbols = r.unpack("I")
    lengths = np.frombuffer(r.take(n_symbols), dtype=np.uint8)
    sole = r.unpack("I")
    code = canonical_code(lengths, sole_symbol=None if sole == NO_SYMBOL else sole)
    state_dict, codes = {}, {}
    for _ in range(r.unpack("I")):
        kind = r.unpack("B")
        name = r.name()
        dtype_code, ndim = r.unpack("BB")
        dtype = _dtype(dtype_code)
        shape = r.unpack_tuple(f"{ndim}Q")
        if kind not in _FIRST_VERSION:
            raise ValueError(f"entry {name!r} has unknown kind {kind}")
        if _FIRST_VERSION[kind] > version:
            raise ValueError(f"entry {name!r} is a {_KIND_LAYOUTS[kind]} entry (kind {kind}), which format "
                             f"version {version} does not have")
        if kind == KIND_FP:
            state_dict[name] = _tensor(r.take(math.prod(shape) * _itemsize(dtype)), dtype, shape)
        else:
            codes[name] = _get_quantized(r, kind, dtype, shape, code)
            state_dict[name] = decode(codes[name])
    if r.at != len(payload):
        raise ValueError(f"{len(payload) - r.at} bytes left after the last entry")
    return state_dict, codes, header
