"""Foreground masks in Sparkle's bit-packed ``.npz`` format, and Qwen-style normalised boxes."""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Sequence
from typing import IO

import numpy as np

from ..errors import SparkleDataError

#: Qwen2.5-VL grounding boxes are ``x1, y1, x2, y2`` normalised to ``[0, 1000]``.
QWEN_BOX_SCALE = 1000.0
#: Every ``.npz`` is a zip archive; checking this first avoids numpy's misleading "pickled data" message.
ZIP_MAGIC = b"PK\x03\x04"


def pack_mask(mask: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean ``(T, H, W)`` mask -> the arrays stored in a Sparkle ``.npz`` (``mask``, ``shape``)."""
    arr = np.asarray(mask)
    if arr.ndim != 3:
        raise ValueError(f"mask must be (T, H, W), got shape {arr.shape}")
    return {"mask": np.packbits(arr.astype(bool).reshape(-1)), "shape": np.asarray(arr.shape, dtype=np.int64)}


def unpack_mask(mask: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`pack_mask`."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"mask shape must be three positive sizes, got {shape}")
    total = shape[0] * shape[1] * shape[2]
    bits = np.unpackbits(np.asarray(mask, dtype=np.uint8))
    if bits.size < total:
        raise ValueError(f"packed mask holds {bits.size} bits, shape {shape} needs {total}")
    return bits[:total].reshape(shape).astype(bool)


def save_mask(mask: np.ndarray, path: str | os.PathLike | IO[bytes]) -> None:
    """Write a boolean ``(T, H, W)`` mask as a compressed Sparkle ``.npz``."""
    np.savez_compressed(path, **pack_mask(mask))


def load_mask(source: str | os.PathLike | bytes | IO[bytes], name: str | None = None) -> np.ndarray:
    """Read a Sparkle mask ``.npz`` (never unpickles) -> boolean ``(T, H, W)``."""
    label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<mask>")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    head = _read_head(source, label)
    if not head.startswith(ZIP_MAGIC):  # np.load would treat anything else as a pickle and say so
        raise SparkleDataError(
            f"not an npz file (a zip archive starts with {ZIP_MAGIC!r}, got {head!r})", path=label
        )
    try:
        with np.load(source, allow_pickle=False) as data:
            if "mask" not in data.files or "shape" not in data.files:
                raise SparkleDataError(
                    f"mask file lacks 'mask'/'shape' arrays (has {data.files})", path=label
                )
            return unpack_mask(data["mask"], data["shape"])
    except SparkleDataError:
        raise
    except ValueError as e:  # object arrays refuse to load without pickle
        raise SparkleDataError(f"unreadable mask ({e})", path=label) from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # a truncated or corrupt archive
        raise SparkleDataError(f"not an npz file ({e})", path=label) from e


def _read_head(source: str | os.PathLike | IO[bytes], label: str, n: int = 4) -> bytes:
    """The first ``n`` bytes of a path or seekable file object, leaving the object's position as it was."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                return f.read(n)
        except OSError as e:
            raise SparkleDataError(f"mask file cannot be read ({e})", path=label) from e
    pos = source.tell()
    head = source.read(n)
    source.seek(pos)
    return head


def qwen_box_to_pixels(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Qwen ``[0, 1000]`` normalised ``x1, y1, x2, y2`` -> integer pixel box clipped to the frame."""
    if len(box) != 4:
        raise ValueError(f"box must have 4 numbers, got {list(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    sx, sy = width / QWEN_BOX_SCALE, height / QWEN_BOX_SCALE
    px1 = int(np.clip(round(min(x1, x2) * sx), 0, width))
    px2 = int(np.clip(round(max(x1, x2) * sx), 0, width))
    py1 = int(np.clip(round(min(y1, y2) * sy), 0, height))
    py2 = int(np.clip(round(max(y1, y2) * sy), 0, height))
    return px1, py1, px2, py2


def pixels_to_qwen_box(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel ``x1, y1, x2, y2`` -> Qwen ``[0, 1000]`` normalised box."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        round(x1 / width * QWEN_BOX_SCALE),
        round(y1 / height * QWEN_BOX_SCALE),
        round(x2 / width * QWEN_BOX_SCALE),
        round(y2 / height * QWEN_BOX_SCALE),
    )
