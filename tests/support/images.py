"""Encoded test images: random PNG/JPEG uploads, hostile headers, and folder datasets on disk."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def png_bytes(height: int = 40, width: int = 48, seed: int = 0, channels: int = 3) -> bytes:
    """A PNG of uniform random pixels (``channels`` 1 gives a grayscale PNG)."""
    rng = np.random.default_rng(seed)
    shape = (height, width, channels) if channels > 1 else (height, width)
    ok, encoded = cv2.imencode(".png", rng.integers(0, 256, shape, dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def jpeg_bytes(height: int = 40, width: int = 48, seed: int = 0) -> bytes:
    """A JPEG of uniform random colour pixels."""
    rng = np.random.default_rng(seed)
    ok, encoded = cv2.imencode(".jpg", rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    assert ok
    return encoded.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` × ``height`` (valid signature, IHDR and CRC, tiny IDAT, IEND):
    a decompression bomb's header without the bomb."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real 64 × 64 JPEG whose frame header claims ``width`` × ``height``, its scan cut to
    ~3 KB and closed with EOI: decoders allocate the claimed frame and pad it grey ("premature
    end of data segment"), so a few KB make a decompression bomb."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = bytearray(cv2.imencode(".jpg", pixels)[1].tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    scan = data.find(b"\xff\xda")
    return bytes(data[: scan + 3000]) + b"\xff\xd9"


def make_folder_dataset(root: Path, per_class: int = 10, size: int = 40) -> Path:
    """Two classes of noisy PNGs (dark vs bright) in ``root/<class>/``, a ``folders`` dataset
    a 32-px model learns in one epoch."""
    rng = np.random.default_rng(7)
    for name, level in (("dark", 60), ("bright", 180)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(level + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            assert cv2.imwrite(str(root / name / f"{name}{i:02d}.png"), pixels)
    return root
