"""Masks in the official bit-packed ``.npz`` format, pinned by golden bytes."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest

from sparkle_video import SparkleDataError, load_mask
from sparkle_video.masks import pack_mask, save_mask, unpack_mask

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
