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


def test_uniform_frames_and_tensors_honour_size_and_range(mp4: Path) -> None:
    r = VideoReader(mp4)
    small = r.get_frames_uniform(3, size=(32, 48))
    np.testing.assert_array_equal(small, pyav_decode(mp4, size=(32, 48))[[0, 8, 16]])
    t = r.to_tensor([0, 16], size=(32, 48), value_range=(-1.0, 1.0))
    assert tuple(t.shape) == (3, 2, 32, 48)
    expected = frames_to_tensor(small[[0, 2]], value_range=(-1.0, 1.0))
    assert bool((t == expected).all())
    assert float(t.min()) < 0  # the range was applied, not the default (0, 1)


def test_iter_frames_is_one_pass_over_every_frame(mp4: Path) -> None:
    r = VideoReader(mp4)
    frames = list(r.iter_frames(size=(32, 48)))
    assert r.frames_decoded == 17 and len(frames) == 17
    np.testing.assert_array_equal(np.stack(frames), pyav_decode(mp4, size=(32, 48)))
    np.testing.assert_array_equal(next(iter(VideoReader(mp4).iter_frames())), pyav_decode(mp4)[0])


def test_frames_to_tensor_refuses_anything_but_rgb_clips() -> None:
    for shape in [(4, 4, 3), (1, 4, 4, 4), (1, 4, 4)]:
        with pytest.raises(ValueError, match="expected"):
            frames_to_tensor(np.zeros(shape, np.uint8))
    t = frames_to_tensor(np.full((1, 1, 1, 3), 255, np.uint8), value_range=(-1.0, 3.0))
    assert t.dtype.is_floating_point and t.flatten().tolist() == [3.0, 3.0, 3.0]


def test_tensor_to_frames_clips_out_of_range_values() -> None:
    import torch

    t = torch.tensor([-0.5, 0.0, 0.5, 1.0, 1.5, 2.5]).reshape(1, 6, 1, 1).expand(3, 6, 1, 1)
    frames = tensor_to_frames(t)
    assert frames.dtype == np.uint8 and frames.shape == (6, 1, 1, 3)
    assert frames[:, 0, 0, 0].tolist() == [0, 0, 128, 255, 255, 255]


def test_borrowed_file_objects_are_read_in_the_callers_chunks() -> None:
    from sparkle_video.video import _Borrowed

    raw = io.BytesIO(b"0123456789")
    b = _Borrowed(raw)
    assert b.readable() and b.seekable()
    buf = bytearray(4)
    assert b.readinto(buf) == 4 and bytes(buf) == b"0123" and b.tell() == 4
    assert b.seek(8) == 8 and b.readinto(buf) == 2 and bytes(buf[:2]) == b"89"
    b.close()
    assert not raw.closed  # the caller owns it


def test_reader_leaves_a_callers_file_object_open_and_reads_past_one_buffer(tmp_path: Path) -> None:
    # a clip larger than any single read, so every read has to stay within the buffer it was given
    path = tmp_path / "noisy.mp4"
    noise = np.random.default_rng(0).integers(0, 256, size=(6, 256, 256, 3), dtype=np.uint8)
    write_video(noise, path, fps=16, crf=0)
    assert path.stat().st_size > 256 << 10
    f = open(path, "rb")  # noqa: SIM115 - the test checks it stays open
    try:
        np.testing.assert_array_equal(VideoReader(f).get_frames([5]), pyav_decode(path)[[5]])
        assert not f.closed
    finally:
        f.close()


def test_remote_cache_is_a_byte_bounded_lru() -> None:
    from sparkle_video.video import RemoteBytesCache

    cache = RemoteBytesCache(10)
    cache.put("big", b"x" * 11)  # larger than the bound: never kept
    assert len(cache) == 0 and cache.get("big") is None
    cache.put("full", b"x" * 10)  # exactly the bound fits
    assert cache.get("full") == b"x" * 10
    cache.clear()
    cache.put("a", b"aaaa")
    cache.put("b", b"bbbb")
    cache.put("c", b"cc")  # 10 bytes in all: nothing evicted
    assert len(cache) == 3
    assert cache.get("a") == b"aaaa"  # "a" is now the most recently used
    cache.put("d", b"d")  # 11 bytes: the least recently used ("b") goes
    assert cache.get("b") is None and [cache.get(k) for k in "acd"] == [b"aaaa", b"cc", b"d"]
    cache.put("a", b"zzzz")  # a key already present is kept as it was
    assert cache.get("a") == b"aaaa" and len(cache) == 3
    cache.put("e", b"eeee")  # 4 + 2 + 1 + 4 = 11: the least recently used ("c") goes
    assert len(cache) == 3 and cache.get("c") is None
    cache.put("f", b"ff")  # 4 + 1 + 4 + 2 = 11: then "d"
    assert cache.get("d") is None and [cache.get(k) for k in "aef"] == [b"aaaa", b"eeee", b"ff"]
