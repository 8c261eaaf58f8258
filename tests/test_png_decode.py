"""The fast PNG decoder against Pillow, on PNGs with every row filter (encoded here by hand) and on broken files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from segrepro.data.png import decode_png


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def encode(array: np.ndarray, colour: int, depth: int, rng: np.random.Generator) -> bytes:
    """A PNG whose rows use random filters (0-4), written from the specification, independent of any library."""
    h = array.shape[0]
    rows = array.astype(">u2" if depth == 16 else np.uint8).reshape(h, -1).view(np.uint8).reshape(h, -1)
    bpp = {0: 1, 2: 3, 3: 1}[colour] * depth // 8
    out, prev = bytearray(), np.zeros(rows.shape[1], dtype=np.int64)
    for row in rows.astype(np.int64):
        kind = int(rng.integers(0, 5))
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prev[:-bpp]])
        pred = [np.zeros_like(row), left, prev, (left + prev) // 2,
                np.array([_paeth(*t) for t in zip(left, prev, upleft)], dtype=np.int64)][kind]
        out += bytes([kind]) + ((row - pred) % 256).astype(np.uint8).tobytes()
        prev = row
    width = array.shape[1]
    header = struct.pack(">IIBBBBB", width, h, depth, colour, 0, 0, 0)
    extra = _chunk(b"PLTE", bytes(range(256)) * 3) if colour == 3 else b""
    data = zlib.compress(bytes(out), 6)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", data[:7]) + \
        _chunk(b"IDAT", data[7:]) + _chunk(b"IEND", b"")


@pytest.mark.parametrize(("colour", "depth", "shape", "mode"), [
    (0, 8, (23, 37), "L"), (0, 16, (19, 29), "I;16"), (2, 8, (17, 31, 3), "RGB"), (3, 8, (11, 13), "P")])
def test_equals_pillow_for_every_filter(colour: int, depth: int, shape: tuple[int, ...], mode: str) -> None:
    rng = np.random.default_rng(colour * 100 + depth)
    high = 2 ** depth
    array = rng.integers(0, high, size=shape)
    array[: shape[0] // 2] //= 7  # smooth and random halves
    data = encode(array, colour, depth, rng)
    ours, our_mode = decode_png(data)
    with Image.open(io.BytesIO(data)) as im:
        ref, ref_mode = np.array(im), im.mode
    assert our_mode == ref_mode == mode
    assert ours.dtype == ref.dtype and np.array_equal(ours, ref) and np.array_equal(ours, array)


def test_broken_or_unhandled_files_go_to_pillow() -> None:
    rng = np.random.default_rng(0)
    good = encode(rng.integers(0, 256, size=(8, 8)), 0, 8, rng)
    assert decode_png(good) is not None
    assert decode_png(good[:-20]) is None  # truncated
    corrupt = bytearray(good)
    corrupt[40] ^= 0xFF
    assert decode_png(bytes(corrupt)) is None  # CRC mismatch
    buf = io.BytesIO()
    Image.fromarray(np.zeros((4, 4, 4), np.uint8)).save(buf, format="PNG")
    assert decode_png(buf.getvalue()) is None  # RGBA: not a layout handled here
    assert decode_png(b"not a png") is None
