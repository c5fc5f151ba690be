"""VideoReader: metadata without decoding, exact frames, every source kind, bad files."""

from __future__ import annotations

import io
from pathlib import Path

import av
import fsspec
import numpy as np
import pytest
from conftest import clip

from sparkle_video import (
    SparkleDataError,
    VideoReader,
    frames_to_tensor,
    model_frame_size,
    model_num_frames,
    tensor_to_frames,
    uniform_indices,
    write_video,
)
from sparkle_video.video import RESIZE_INTERPOLATION


@pytest.fixture(scope="module")
def mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("v") / "clip.mp4"
    write_video(clip(3, frames=17, height=64, width=96), path, fps=16)
    return path


def pyav_decode(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    kwargs = {"format": "rgb24"}
    if size:
        kwargs.update(height=size[0], width=size[1], interpolation=RESIZE_INTERPOLATION)
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(**kwargs) for f in c.decode(video=0)])


def test_metadata_without_decoding(mp4: Path) -> None:
    r = VideoReader(mp4)
    assert r.opens == 0
    m = r.metadata
    assert (m.num_frames, m.width, m.height, m.fps, m.codec, m.pix_fmt) == (
        17,
        96,
        64,
        16.0,
        "h264",
        "yuv420p",
    )
    assert m.duration == pytest.approx(17 / 16, abs=0.07)
    assert r.frames_decoded == 0 and len(r) == 17


def test_frames_exact_against_pyav_in_requested_order(mp4: Path) -> None:
    ref = pyav_decode(mp4)
    r = VideoReader(mp4)
    got = r.get_frames([5, 0, 5, -1])
    assert got.dtype == np.uint8 and got.shape == (4, 64, 96, 3)
    np.testing.assert_array_equal(got, ref[[5, 0, 5, 16]])
    assert r.frames_decoded == 17  # decoded once, up to the last frame asked for
    r2 = VideoReader(mp4)
    r2.get_frames([2, 1])
    assert r2.frames_decoded == 3  # stops at the largest index


def test_distinct_unsorted_indices_keep_the_order_asked(mp4: Path) -> None:
    one_by_one = np.stack([VideoReader(mp4).get_frame(i) for i in (3, 0, 2)])
    got = VideoReader(mp4).get_frames([3, 0, 2])
    assert got.shape == (3, 64, 96, 3)
    np.testing.assert_array_equal(got, one_by_one)
    assert not np.array_equal(got[0], got[1])  # the frames differ, so a wrong order shows


def test_resize_matches_pyav_reformat(mp4: Path) -> None:
    ref = pyav_decode(mp4, size=(32, 48))
    got = VideoReader(mp4).get_frames([0, 7], size=(32, 48))
    np.testing.assert_array_equal(got, ref[[0, 7]])


def test_every_source_kind_gives_same_frames(mp4: Path, tmp_path: Path) -> None:
    data = mp4.read_bytes()
    expected = VideoReader(mp4).get_frames([0, 8])
    with fsspec.open("memory://vid/clip.mp4", "wb") as f:
        f.write(data)
    blob = b"HEADER" * 100 + data + b"TRAILER"
    blob_path = tmp_path / "blob.bin"
    blob_path.write_bytes(blob)
    sources = [
        VideoReader(data),
        VideoReader(io.BytesIO(data)),
        VideoReader(str(mp4)),
        VideoReader("memory://vid/clip.mp4"),
        VideoReader(f"file://{mp4}"),
        VideoReader(str(blob_path), offset=600, size=len(data)),
        VideoReader(lambda: open(mp4, "rb")),  # noqa: SIM115 - the reader closes it
    ]
    for r in sources:
        np.testing.assert_array_equal(r.get_frames([0, 8]), expected)
        assert r.num_frames == 17


def test_uniform_and_sizes() -> None:
    assert uniform_indices(81, 4).tolist() == [0, 27, 53, 80]
    assert uniform_indices(10, 1).tolist() == [0]
    assert model_frame_size(720, 1280) == (704, 1280)
    assert model_frame_size(1080, 1920) == (704, 1280)
    h, w = model_frame_size(480, 832)
    assert (h, w) == (480, 832)
    assert model_num_frames(81) == 81 and model_num_frames(100) == 81 and model_num_frames(70) == 69
    assert model_num_frames(4) == 1
    with pytest.raises(ValueError):
        uniform_indices(0, 3)


def test_tensor_round_trip(mp4: Path) -> None:
    frames = VideoReader(mp4).get_frames([0, 1, 2])
    t = frames_to_tensor(frames, value_range=(-1, 1))
    assert tuple(t.shape) == (3, 3, 64, 96)
    assert float(t.min()) >= -1 and float(t.max()) <= 1
    np.testing.assert_array_equal(tensor_to_frames(t, value_range=(-1, 1)), frames)
    tt = VideoReader(mp4).to_tensor([0])
    assert tt.shape == (3, 1, 64, 96) and tt.dtype.is_floating_point


def test_write_video_odd_sizes_and_atomic(tmp_path: Path) -> None:
    frames = clip(1, frames=5, height=31, width=45)
    out = tmp_path / "sub" / "odd.mp4"
    write_video(frames, out, fps=15)
    r = VideoReader(out)
    assert (r.height, r.width, r.num_frames, r.fps) == (32, 46, 5, 15.0)
    assert not list(tmp_path.rglob("*.partial*"))
    with pytest.raises(ValueError):
        write_video(np.zeros((0, 8, 8, 3), np.uint8), tmp_path / "empty.mp4")
    assert not (tmp_path / "empty.mp4").exists() and not list(tmp_path.rglob("*.partial*"))


def test_out_of_range(mp4: Path) -> None:
    with pytest.raises(IndexError):
        VideoReader(mp4).get_frames([17])


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "not a readable video"), (b"this is plain text, not a video" * 20, "not a readable video")],
)
def test_bad_files_raise_named_errors(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.mp4"
    path.write_bytes(content)
    with pytest.raises(SparkleDataError, match=reason) as e:
        VideoReader(path).num_frames  # noqa: B018
    assert str(path) in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SparkleDataError, match="not found"):
        VideoReader(tmp_path / "nope.mp4").get_frames([0])


def test_truncated_file(mp4: Path, tmp_path: Path) -> None:
    data = mp4.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(SparkleDataError) as e:
        VideoReader(cut).get_frames(None)
    assert "cut.mp4" in str(e.value)


def test_real_sample_metadata_and_frames() -> None:
    from conftest import SAMPLES

    path = SAMPLES / "location" / "source_video" / "Sparkle_location_000223.mp4"
    if not path.exists():
        pytest.skip("shared samples absent")
    r = VideoReader(path)
    assert (r.width, r.height, r.fps) == (1280, 720, 16.0)
    assert 69 <= r.num_frames <= 81
    got = r.get_frames([0, r.num_frames - 1], size=(352, 640))
    assert got.shape == (2, 352, 640, 3)
