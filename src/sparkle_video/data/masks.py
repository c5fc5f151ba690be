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
#: The largest mask a file may declare: 81 frames of 4096 x 4096 (about 170 MB packed, 1.4 GB unpacked).
#: A bigger claim is refused before anything is inflated, so a small file cannot exhaust memory.
MAX_MASK_BITS = 81 * 4096 * 4096
#: ``shape.npy`` holds three integers: a member bigger than this is not one.
MAX_SHAPE_MEMBER_BYTES = 4096


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
    """Read a Sparkle mask ``.npz`` (never unpickles) -> boolean ``(T, H, W)``.

    The archive is read member by member with bounded reads: ``shape`` first (three positive integers,
    at most ``MAX_MASK_BITS`` in all), then ``mask``, whose declared length and stored size must be
    exactly what that shape packs into, before a byte of it is inflated.
    """
    label = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "<mask>")
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    head = _read_head(source, label)
    if not head.startswith(ZIP_MAGIC):  # np.load would treat anything else as a pickle and say so
        raise SparkleDataError(
            f"not an npz file (a zip archive starts with {ZIP_MAGIC!r}, got {head!r})", path=label
        )
    try:
        with zipfile.ZipFile(source) as zf:
            members = {info.filename: info for info in zf.infolist()}
            if "mask.npy" not in members or "shape.npy" not in members:
                files = [n[: -len(".npy")] if n.endswith(".npy") else n for n in members]
                raise SparkleDataError(f"mask file lacks 'mask'/'shape' arrays (has {files})", path=label)
            shape = _read_shape(zf, members["shape.npy"], label)
            return unpack_mask(_read_packed(zf, members["mask.npy"], shape, label), shape)
    except SparkleDataError:
        raise
    except ValueError as e:  # a header numpy cannot parse
        raise SparkleDataError(f"unreadable mask ({e})", path=label) from e
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # a truncated or corrupt archive
        raise SparkleDataError(f"not an npz file ({e})", path=label) from e


def _npy_header(f: IO[bytes], member: str, label: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, header bytes)`` of an ``.npy`` stream; object dtypes are refused (no pickle)."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # pragma: no cover - read_magic accepts only these majors
        raise SparkleDataError(f"unreadable mask ({member}: npy version {version})", path=label)
    if dtype.hasobject:
        raise SparkleDataError(
            f"unreadable mask ({member} holds Python objects, which are never unpickled)", path=label
        )
    return tuple(int(s) for s in shape), dtype, f.tell()


def _read_shape(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str) -> tuple[int, int, int]:
    if info.file_size > MAX_SHAPE_MEMBER_BYTES:
        raise SparkleDataError(
            f"unreadable mask (shape.npy claims {info.file_size} bytes; three integers need far fewer)",
            path=label,
        )
    with zf.open(info) as raw:
        f = io.BytesIO(raw.read(MAX_SHAPE_MEMBER_BYTES + 1))
    dims, dtype, _ = _npy_header(f, "shape.npy", label)
    if dtype.kind not in "iu" or dims != (3,):
        raise SparkleDataError(
            f"unreadable mask (shape must be 3 integers, got a {dtype} array of shape {dims})", path=label
        )
    values = np.frombuffer(f.read(3 * dtype.itemsize), dtype=dtype)
    if values.size != 3:
        raise SparkleDataError("unreadable mask (shape.npy is truncated)", path=label)
    shape = tuple(int(v) for v in values)
    if any(v <= 0 for v in shape):
        raise SparkleDataError(
            f"unreadable mask (shape must be three positive sizes, got {shape})", path=label
        )
    total = shape[0] * shape[1] * shape[2]
    if total > MAX_MASK_BITS:
        raise SparkleDataError(
            f"unreadable mask (shape {shape} is {total} pixels, over the limit of {MAX_MASK_BITS} "
            "= 81 x 4096 x 4096)",
            path=label,
        )
    return shape  # type: ignore[return-value]


def _read_packed(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, shape: tuple[int, int, int], label: str
) -> np.ndarray:
    """The packed bits, read only once their declared and stored sizes agree with ``shape``."""
    need = (shape[0] * shape[1] * shape[2] + 7) // 8
    with zf.open(info) as f:
        dims, dtype, header = _npy_header(f, "mask.npy", label)
        if dtype.itemsize != 1 or dtype.kind not in "uib" or len(dims) != 1 or dims[0] != need:
            raise SparkleDataError(
                f"unreadable mask (shape {shape} packs into {need} bytes, but mask.npy declares a {dtype} "
                f"array of shape {dims})",
                path=label,
            )
        if info.file_size != header + need:
            raise SparkleDataError(
                f"unreadable mask (mask.npy stores {info.file_size} bytes, its header and {need} bytes of bits "
                f"take {header + need})",
                path=label,
            )
        data = f.read(need)
        if len(data) != need or f.read(1):  # reading to the end also checks the member's CRC
            raise SparkleDataError("not an npz file (mask.npy is truncated)", path=label)
    return np.frombuffer(data, dtype=np.uint8)


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
