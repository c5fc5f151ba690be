"""Masks in the official bit-packed ``.npz`` format, pinned by golden bytes."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest

from sparkle_video import SparkleDataError, load_mask
from sparkle_video.data.masks import pack_mask, save_mask, unpack_mask

#: A (2, 3, 5) mask written by the reference recipe: ``np.savez(mask=np.packbits(m), shape=m.shape)``
#: (default big-endian bit order, C order). 30 bits -> 4 packed bytes ``81 c0 80 04``.
GOLDEN_NPZ = base64.b64decode(
    "UEsDBC0AAAAAAAAAIQBnQYcK//////////8IABQAbWFzay5ucHkBABAAhAAAAAAAAACEAAAAAAAAAJNOVU1QWQEAdgB7J2Rlc2Ny"
    "JzogJ3x1MScsICdmb3J0cmFuX29yZGVyJzogRmFsc2UsICdzaGFwZSc6ICg0LCksIH0gICAgICAgICAgICAgICAgICAgICAgICAg"
    "ICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAKgcCABFBLAwQtAAAAAAAAACEAgqBMvv//////////CQAUAHNoYXBl"
    "Lm5weQEAEACYAAAAAAAAAJgAAAAAAAAAk05VTVBZAQB2AHsnZGVzY3InOiAnPGk4JywgJ2ZvcnRyYW5fb3JkZXInOiBGYWxzZSwg"
    "J3NoYXBlJzogKDMsKSwgfSAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAg"
    "IAoCAAAAAAAAAAMAAAAAAAAABQAAAAAAAABQSwECLQMtAAAAAAAAACEAZ0GHCoQAAACEAAAACAAAAAAAAAAAAAAAgAEAAAAAbWFz"
    "ay5ucHlQSwECLQMtAAAAAAAAACEAgqBMvpgAAACYAAAACQAAAAAAAAAAAAAAgAG+AAAAc2hhcGUubnB5UEsFBgAAAAACAAIAbQAA"
    "AJEBAAAAAA=="
)
GOLDEN_PACKED = bytes([0x81, 0xC0, 0x80, 0x04])
GOLDEN_MASK = np.array(
    [
        [[1, 0, 0, 0, 0], [0, 0, 1, 1, 1], [0, 0, 0, 0, 0]],
        [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]],
    ],
    dtype=bool,
)


def test_golden_npz_unpacks_to_the_known_mask() -> None:
    got = load_mask(GOLDEN_NPZ)
    assert got.dtype == bool and got.shape == (2, 3, 5)
    np.testing.assert_array_equal(got, GOLDEN_MASK)


def test_pack_mask_gives_the_golden_bytes() -> None:
    packed = pack_mask(GOLDEN_MASK)
    assert packed["mask"].dtype == np.uint8 and packed["mask"].tobytes() == GOLDEN_PACKED
    assert packed["shape"].tolist() == [2, 3, 5]
    np.testing.assert_array_equal(unpack_mask(np.frombuffer(GOLDEN_PACKED, np.uint8), (2, 3, 5)), GOLDEN_MASK)


def test_save_load_round_trip_odd_sizes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((3, 7, 11)) > 0.5  # 231 bits: the last byte is padded
    save_mask(mask, tmp_path / "m.npz")
    np.testing.assert_array_equal(load_mask(tmp_path / "m.npz"), mask)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert data["mask"].tobytes() == np.packbits(mask).tobytes()


def test_unpack_rejects_too_few_bits() -> None:
    with pytest.raises(ValueError, match="needs 30"):
        unpack_mask(np.frombuffer(GOLDEN_PACKED[:3], np.uint8), (2, 3, 5))


@pytest.mark.parametrize(
    "content", [b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, b"plain text, not a mask"], ids=["png", "text"]
)
def test_non_npz_file_says_so(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    with pytest.raises(SparkleDataError, match="not an npz") as e:
        load_mask(path)
    assert "pickle" not in str(e.value) and "m.npz" in str(e.value)


def test_load_from_file_object() -> None:
    np.testing.assert_array_equal(load_mask(io.BytesIO(GOLDEN_NPZ)), GOLDEN_MASK)


def test_unpack_accepts_exactly_enough_bits_and_unit_sizes() -> None:
    mask = np.array([[[1, 0, 1, 1], [0, 0, 0, 1]]], dtype=bool)  # (1, 2, 4): exactly one byte
    packed = pack_mask(mask)
    assert packed["mask"].tolist() == [0b10110001] and packed["shape"].tolist() == [1, 2, 4]
    np.testing.assert_array_equal(unpack_mask(packed["mask"], (1, 2, 4)), mask)
    # byte values given as plain integers (e.g. parsed from text) unpack the same way
    np.testing.assert_array_equal(unpack_mask([0b10110001], [1, 2, 4]), mask)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5, 1), (2, 0, 5), (2, -3, 5)])
def test_unpack_rejects_shapes_that_are_not_three_positive_sizes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="three positive sizes"):
        unpack_mask(np.frombuffer(GOLDEN_PACKED, np.uint8), shape)


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


@pytest.mark.parametrize("present", ["mask", "shape", "neither"])
def test_npz_without_both_arrays_is_refused(present: str) -> None:
    arrays = {"mask": np.frombuffer(GOLDEN_PACKED, np.uint8), "shape": np.array([2, 3, 5])}
    kept = {k: v for k, v in arrays.items() if k == present} or {"other": np.zeros(1)}
    with pytest.raises(SparkleDataError, match="lacks 'mask'/'shape' arrays") as e:
        load_mask(_npz(**kept), name="masks/x.npz")
    assert "file: masks/x.npz" in str(e.value)


def test_errors_name_the_source(tmp_path: Path) -> None:
    with pytest.raises(
        SparkleDataError, match=r"not an npz file \(a zip archive starts with .*got b'plai'\)"
    ) as e:
        load_mask(io.BytesIO(b"plain text, not a mask"))
    assert str(e.value).endswith("file: <mask>")  # a file object without a name
    with pytest.raises(SparkleDataError, match=r"got b'plai'\) \| file: bench/m\.npz$"):
        load_mask(b"plain text, not a mask", name="bench/m.npz")
    text = tmp_path / "t.npz"
    text.write_bytes(b"plain text, not a mask")
    with pytest.raises(SparkleDataError, match=r"got b'plai'\) \| file: .*t\.npz$"):
        load_mask(text)
    with pytest.raises(SparkleDataError, match="mask file cannot be read") as e:
        load_mask(tmp_path / "missing.npz")
    assert str(e.value).endswith(f"file: {tmp_path / 'missing.npz'}")


def test_truncated_or_corrupt_npz_is_a_data_error() -> None:
    whole = _npz(mask=np.zeros(200, np.uint8), shape=np.array([8, 10, 20]))
    corrupt = bytearray(whole)
    corrupt[80] ^= 0xFF  # inside the first member's data: its CRC no longer matches
    for blob in (whole[: len(whole) // 2], bytes(corrupt)):
        with pytest.raises(SparkleDataError, match="not an npz file") as e:
            load_mask(blob, name="m.npz")
        assert "m.npz" in str(e.value)


def test_qwen_boxes_scale_order_and_clip_to_the_frame() -> None:
    from sparkle_video.data.masks import pixels_to_qwen_box, qwen_box_to_pixels

    assert qwen_box_to_pixels([100, 200, 600, 900], 640, 480) == (64, 96, 384, 432)
    assert qwen_box_to_pixels((600, 900, 100, 200), 640, 480) == (64, 96, 384, 432)  # corners in any order
    assert qwen_box_to_pixels([-50, -20, 1200, 1100], 640, 480) == (0, 0, 640, 480)
    assert qwen_box_to_pixels([-90, -80, -40, -30], 640, 480) == (0, 0, 0, 0)  # wholly above-left
    assert qwen_box_to_pixels([1100, 1050, 1300, 1200], 640, 480) == (640, 480, 640, 480)  # below-right
    with pytest.raises(ValueError, match="box must have 4 numbers"):
        qwen_box_to_pixels([1, 2, 3], 640, 480)
    assert pixels_to_qwen_box((64, 96, 384, 432), 640, 480) == (100, 200, 600, 900)


@pytest.mark.parametrize("shape", [(4, 4), (1, 2, 3, 4)])
def test_pack_mask_refuses_what_is_not_t_h_w(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(f"mask must be (T, H, W), got shape {shape}")):
        pack_mask(np.zeros(shape, bool))
