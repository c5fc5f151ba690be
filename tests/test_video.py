"""VideoReader: metadata without decoding, exact frames, every source kind, bad files."""

from __future__ import annotations

import io
from fractions import Fraction
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
from sparkle_video.data.video import RESIZE_INTERPOLATION


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
    assert m.duration == pytest.approx(1.0620, abs=1e-4)  # the stream's own duration, not 17 / 16 = 1.0625
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
    from sparkle_video.data.video import _Borrowed

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
    from sparkle_video.data.video import RemoteBytesCache

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


# -- containers other than the mp4s write_video makes ---------------------------------------------
def encode(
    frames: np.ndarray,
    path: Path,
    fmt: str,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container_options: dict[str, str] | None = None,
    audio: bool = False,
    rate: Fraction | int = 16,
) -> bytes:
    """Encode ``frames`` into any container; ``audio`` interleaves a silent mono track."""
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as c:
        sound = c.add_stream("pcm_s16le", rate=8000) if audio else None
        stream = c.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if codec == "libx264":  # one thread, no B-frames: the same bytes every run, packets in frame order
            stream.options = {"threads": "1", "x264-params": "bframes=0"}
        for i, frame in enumerate(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(packet)
            if sound is not None:
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 500), np.int16), format="s16", layout="mono")
                chunk.sample_rate, chunk.pts = 8000, i * 500
                for packet in sound.encode(chunk):
                    c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    return path.read_bytes()


def test_metadata_counts_packets_when_the_container_has_no_frame_count(tmp_path: Path) -> None:
    frames = clip(2, frames=9)
    mkv = VideoReader(encode(frames, tmp_path / "a.mkv", "matroska"))
    assert (mkv.num_frames, mkv.fps, mkv.width, mkv.height, mkv.metadata.codec) == (9, 16.0, 64, 48, "h264")
    assert mkv.frames_decoded == 0
    ts = VideoReader(encode(frames, tmp_path / "a.ts", "mpegts"))
    assert ts.num_frames == 9 and ts.duration == pytest.approx(9 / 16)  # from the stream's own duration
    # one-byte packets (1x1 grey raw video) are frames too; this stream has no duration: frames / fps
    grey = np.zeros((9, 1, 1, 3), np.uint8)
    tiny = VideoReader(encode(grey, tmp_path / "t.mkv", "matroska", "rawvideo", "gray"))
    assert (tiny.num_frames, tiny.width, tiny.height, tiny.metadata.codec) == (9, 1, 1, "rawvideo")
    assert tiny.duration == 9 / 16
    slow = VideoReader(
        encode(grey, tmp_path / "slow.mkv", "matroska", "rawvideo", "gray", rate=Fraction(1, 2))
    )
    assert (slow.fps, slow.duration) == (0.5, 18.0)


def test_only_the_video_stream_counts(tmp_path: Path) -> None:
    frames = clip(2, frames=9)
    data = encode(frames, tmp_path / "av.mkv", "matroska", audio=True)
    with av.open(io.BytesIO(data)) as c:
        assert sorted(s.type for s in c.streams) == ["audio", "video"]
    ref = VideoReader(encode(frames, tmp_path / "v.mkv", "matroska")).get_frames(None)
    r = VideoReader(data)
    assert r.num_frames == 9
    np.testing.assert_array_equal(r.get_frames([0, 8]), ref[[0, 8]])
    np.testing.assert_array_equal(np.stack(list(VideoReader(data).iter_frames())), ref)
    decoded = list(VideoReader(data).iter_decoded())
    assert len(decoded) == 9 and all(isinstance(f, av.VideoFrame) for f in decoded)


def test_raw_stream_rate_is_the_demuxers_average(tmp_path: Path) -> None:
    r = VideoReader(encode(clip(2, frames=9), tmp_path / "a.h264", "h264"))
    with av.open(io.BytesIO(r.read_bytes())) as c:
        s = c.streams.video[0]
        assert (s.average_rate, s.base_rate) == (25, 32)  # an elementary stream carries no rate of its own
    assert (r.num_frames, r.fps, r.duration) == (9, 25.0, 9 / 25)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"P5\n0 2\n255\n", "video stream holds no frames"),  # an image header and no image
        # a PNG signature over junk: probed as a one-frame image of unknown size
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "video stream has no frame size (not a real video)"),
    ],
)
def test_streams_without_frames_or_size_are_refused(content: bytes, reason: str) -> None:
    with pytest.raises(SparkleDataError) as e:
        VideoReader(content, name="bad.mp4").num_frames  # noqa: B018
    assert str(e.value) == f"{reason} | file: bad.mp4"


def test_single_image_is_a_one_frame_video() -> None:
    r = VideoReader(b"P5\n2 2\n255\n\x00\x40\x80\xff")
    assert (r.num_frames, r.width, r.height) == (1, 2, 2)
    assert r.get_frame(0)[:, :, 0].tolist() == [[0, 64], [128, 255]]


def test_file_without_a_video_stream(tmp_path: Path) -> None:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 800)
    with pytest.raises(SparkleDataError) as e:
        VideoReader(buf.getvalue(), name="sound.wav").metadata  # noqa: B018
    assert str(e.value) == "file has no video stream | file: sound.wav"


# -- truncation: the header promises frames the data does not hold --------------------------------
@pytest.fixture(scope="module")
def faststart(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, list[tuple[int, int]]]:
    """A 9-frame mp4 with its index first (so a cut file still opens) and its packets' byte ranges."""
    path = tmp_path_factory.mktemp("fs") / "fs.mp4"
    data = encode(clip(4, frames=9), path, "mp4", container_options={"movflags": "faststart"})
    with av.open(io.BytesIO(data)) as c:
        packets = [(p.pos, p.size) for p in c.demux(video=0) if p.size]
    return data, packets


def pyav_count(data: bytes) -> tuple[int, bool]:
    """How many frames PyAV decodes from ``data`` and whether it stopped on an error."""
    n = 0
    try:
        with av.open(io.BytesIO(data)) as c:
            for _ in c.decode(video=0):
                n += 1
    except av.error.FFmpegError:
        return n, True
    return n, False


def test_cut_after_whole_packets_names_how_many_frames_decode(faststart: tuple[bytes, list]) -> None:
    data, packets = faststart
    pos, size = packets[4]
    cut = data[: pos + size]
    assert pyav_count(cut) == (5, False)
    r = VideoReader(cut, name="cut.mp4")
    assert r.num_frames == 9  # the index is intact: it still says 9
    np.testing.assert_array_equal(r.get_frames([4]), VideoReader(data).get_frames([4]))
    assert r.frames_decoded == 5
    with pytest.raises(SparkleDataError) as e:
        r.get_frames(None)
    assert str(e.value) == "video is truncated: asked for frame 8 but only 5 frames decode | file: cut.mp4"
    assert len(list(VideoReader(cut).iter_frames())) == 5 and len(list(VideoReader(cut).iter_decoded())) == 5


def test_cut_inside_a_packet_names_the_frame(faststart: tuple[bytes, list]) -> None:
    data, packets = faststart
    cut = data[: packets[4][0] + 3]
    decoded, failed = pyav_count(cut)
    assert failed
    with pytest.raises(SparkleDataError, match=r"^video is corrupt or truncated at frame (\d+) \(") as e:
        VideoReader(cut, name="cut.mp4").get_frames([8])
    assert e.value.path == "cut.mp4" and f"at frame {decoded} (" in str(e.value)
    for frames in (
        VideoReader(cut, name="cut.mp4").iter_frames(),
        VideoReader(cut, name="cut.mp4").iter_decoded(),
    ):
        with pytest.raises(SparkleDataError, match=r"^video is corrupt or truncated \(") as e:
            list(frames)
        assert e.value.path == "cut.mp4"


def test_one_frame_file_cut_before_its_frame(faststart: tuple[bytes, list], tmp_path: Path) -> None:
    data = encode(clip(4, frames=1), tmp_path / "one.mp4", "mp4", container_options={"movflags": "faststart"})
    with av.open(io.BytesIO(data)) as c:
        (start,) = [p.pos for p in c.demux(video=0) if p.size]
    r = VideoReader(data[:start])
    assert r.num_frames == 1  # what the index says; no packet is read to check it
    with pytest.raises(SparkleDataError, match="only 0 frames decode"):
        r.get_frames(None)


# -- frames asked for ------------------------------------------------------------------------------
def test_no_indices_give_an_empty_batch_of_the_right_shape(mp4: Path) -> None:
    r = VideoReader(mp4)
    empty = r.get_frames([])
    assert empty.shape == (0, 64, 96, 3) and empty.dtype == np.uint8
    assert r.get_frames(np.array([], dtype=int), size=(32, 48)).shape == (0, 32, 48, 3)
    assert r.frames_decoded == 0


def test_indices_of_any_shape_and_negative_ones(mp4: Path) -> None:
    ref = pyav_decode(mp4)
    r = VideoReader(mp4)
    np.testing.assert_array_equal(r.get_frames(np.array([[0, 1], [-17, -2]])), ref[[0, 1, 0, 15]])
    np.testing.assert_array_equal(r.get_frame(-1, size=(32, 48)), pyav_decode(mp4, size=(32, 48))[16])
    with pytest.raises(IndexError) as e:
        r.get_frames([17, -18, 20, 30, 40, 50, 1])
    assert str(e.value) == f"frame indices [17, -1, 20, 30, 40] out of range for 17 frames in {mp4}"


def test_iter_decoded_stops_where_asked(mp4: Path) -> None:
    r = VideoReader(mp4)
    frames = list(r.iter_decoded(stop=3))
    assert len(frames) == 3 and r.frames_decoded == 3
    np.testing.assert_array_equal(
        np.stack([f.to_ndarray(format="rgb24") for f in frames]), pyav_decode(mp4)[:3]
    )
    r2 = VideoReader(mp4)
    assert len(list(r2.iter_decoded())) == 17 and r2.frames_decoded == 17


def test_each_open_is_counted_and_metadata_read_once(mp4: Path) -> None:
    r = VideoReader(mp4)
    assert repr(r) == f"VideoReader({str(mp4)!r}, not opened)"
    r.metadata  # noqa: B018
    r.num_frames  # noqa: B018
    assert r.opens == 1
    r.get_frames([0])  # the decode after a header read reuses the probe's container: the file is read once
    assert r.opens == 1
    r.get_frames([1])  # later decodes open again
    assert r.opens == 2
    assert repr(r) == f"VideoReader({str(mp4)!r}, 17 frames, 96x64 @ 16 fps)"


def test_held_probes_are_bounded_and_not_pickled(mp4: Path) -> None:
    import pickle

    from sparkle_video.data import video as video_module

    readers = [VideoReader(mp4) for _ in range(video_module.MAX_HELD_PROBES + 5)]
    for r in readers:
        r.num_frames  # noqa: B018 - each header read holds its container
    held = [r for r in readers if r._held is not None]
    assert held == readers[-video_module.MAX_HELD_PROBES :]  # the oldest were closed
    again = pickle.loads(pickle.dumps(readers[-1]))
    assert again._held is None and again.num_frames == 17 and again.opens == 1
    readers[-1].close()
    assert readers[-1]._held is None
    np.testing.assert_array_equal(readers[0].get_frames([3]), readers[-1].get_frames([3]))


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.mp4"
    with pytest.raises(SparkleDataError) as e:
        VideoReader(path).read_bytes()
    assert str(e.value) == f"video file not found | file: {path}"


def test_as_video_reader_wraps_once(mp4: Path) -> None:
    from sparkle_video.data.video import as_video_reader

    r = VideoReader(mp4)
    assert as_video_reader(r) is r
    wrapped = as_video_reader(mp4.read_bytes())
    assert isinstance(wrapped, VideoReader) and wrapped.num_frames == 17


# -- sizes and sampling ---------------------------------------------------------------------------
def test_model_sizes_floor_to_the_multiple() -> None:
    assert model_frame_size(500, 700) == (480, 672)  # within the pixel budget: only floored
    assert model_frame_size(1000, 1000) == (928, 928)  # the released code's float edge case
    assert model_frame_size(1, 1) == (32, 32) and model_frame_size(20, 700) == (32, 672)
    assert model_frame_size(100, 100, max_pixels=2500, multiple=16) == (48, 48)
    for h, w in [(0, 64), (64, 0), (-5, 64)]:
        with pytest.raises(ValueError, match=f"bad frame size {h}x{w}"):
            model_frame_size(h, w)


def test_model_frame_counts_are_4k_plus_1() -> None:
    assert [model_num_frames(n) for n in (1, 2, 5, 6, 9, 80)] == [1, 1, 5, 5, 9, 77]
    assert model_num_frames(100, max_frames=33) == 33 and model_num_frames(30, max_frames=33) == 29
    with pytest.raises(ValueError, match=r"^video has no frames$"):
        model_num_frames(0)


def test_uniform_indices_edges() -> None:
    assert uniform_indices(10, 2).tolist() == [0, 9] and uniform_indices(1, 3).tolist() == [0, 0, 0]
    assert uniform_indices(10, 1).dtype == np.int64 and uniform_indices(10, 4).dtype == np.int64
    assert uniform_indices(5, 1).tolist() == [0]
    with pytest.raises(ValueError, match=r"^num_frames must be positive$"):
        uniform_indices(0, 3)
    with pytest.raises(ValueError, match=r"^num must be positive$"):
        uniform_indices(10, 0)


# -- writing ---------------------------------------------------------------------------------------
def x264_settings(data: bytes) -> str:
    """The encoder settings x264 records in the stream it writes."""
    import re

    found = re.search(rb"x264 - core [^\0]*? options: ([^\0]*)", data)
    assert found is not None
    return found.group(1).decode()


def test_write_video_defaults_to_h264_crf18_medium_at_16fps() -> None:
    buf = io.BytesIO()  # a file object is written in place
    write_video(clip(1, frames=3), buf)
    data = buf.getvalue()
    settings = x264_settings(data).split()
    assert "crf=18.0" in settings and "subme=7" in settings and "ref=3" in settings  # medium preset
    r = VideoReader(data)
    assert (r.num_frames, r.fps, r.metadata.codec, r.metadata.pix_fmt) == (3, 16.0, "h264", "yuv420p")


def test_write_video_encoder_settings_and_options_apply() -> None:
    buf = io.BytesIO()
    write_video(clip(1, frames=3), buf, crf=30, preset="ultrafast", options={"x264-params": "mbtree=0"})
    settings = x264_settings(buf.getvalue()).split()
    assert "crf=30.0" in settings and "subme=0" in settings and "mbtree=0" in settings


def test_write_video_stores_rates_as_fractions_up_to_1001() -> None:
    for fps, expected in [(30000 / 1001, 30000 / 1001), (16 + 1 / 1002, 16017 / 1001), (15, 15.0)]:
        buf = io.BytesIO()
        write_video(clip(1, frames=2), buf, fps=fps)
        assert VideoReader(buf.getvalue()).fps == expected


@pytest.mark.parametrize("height, width", [(33, 46), (32, 45), (33, 45)])
def test_write_video_pads_odd_sides_with_their_edge(tmp_path: Path, height: int, width: int) -> None:
    frames = np.full((2, height, width, 3), 200, np.uint8)
    out = tmp_path / "a" / "b" / "odd.mp4"  # missing folders are made
    write_video(frames, out, fps=16)
    got = VideoReader(out).get_frames(None)
    assert got.shape == (2, height + height % 2, width + width % 2, 3)
    assert np.abs(got.astype(int) - 200).max() <= 3  # the padding repeats the edge, not black
    write_video(frames, out, fps=16)  # an existing file is replaced
    assert out.exists() and not list(tmp_path.rglob("*.partial*"))


@pytest.mark.parametrize(
    "frame",
    [np.zeros((8, 8, 4), np.uint8), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32)],
    ids=["rgba", "grey", "float"],
)
def test_write_video_refuses_frames_that_are_not_rgb_uint8(tmp_path: Path, frame: np.ndarray) -> None:
    with pytest.raises(ValueError) as e:
        write_video([frame], tmp_path / "x.mp4")
    assert str(e.value) == f"frames must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}"
    assert not list(tmp_path.iterdir())


def test_write_video_refuses_changing_sizes_and_no_frames(tmp_path: Path) -> None:
    frames = [
        np.zeros((16, 24, 3), np.uint8),
        np.zeros((16, 24, 3), np.uint8),
        np.zeros((24, 16, 3), np.uint8),
    ]
    with pytest.raises(ValueError, match=r"^all frames must have the same size$"):
        write_video(frames, tmp_path / "x.mp4")
    with pytest.raises(ValueError, match=r"^no frames to write$"):
        write_video(iter(()), tmp_path / "y.mp4")
    assert not list(tmp_path.iterdir())  # no half-written file is left behind


def test_write_video_failing_rename_leaves_no_partial_file(tmp_path: Path) -> None:
    taken = tmp_path / "taken.mp4"
    (taken / "inside").mkdir(parents=True)  # a non-empty folder where the file should go
    with pytest.raises(OSError):
        write_video(clip(1, frames=2), taken)
    assert [p.name for p in tmp_path.iterdir()] == ["taken.mp4"] and taken.is_dir()


def test_header_frame_count_decodes_nothing(mp4: Path, tmp_path: Path) -> None:
    r = VideoReader(mp4)
    assert r.header_frame_count() == 17
    assert r._metadata is None and r.frames_decoded == 0  # the full header read was not needed
    r.num_frames  # noqa: B018
    assert r.header_frame_count() == 17  # read back from the metadata once it is there
    # a container whose index states no count (Matroska) falls back to the full header read
    mkv = tmp_path / "clip.mkv"
    encode(clip(2, frames=9, height=32, width=48), mkv, "matroska")
    assert VideoReader(mkv).header_frame_count() == VideoReader(mkv).num_frames == 9
    with pytest.raises(SparkleDataError, match="not a readable video"):
        VideoReader(b"not a video at all").header_frame_count()
