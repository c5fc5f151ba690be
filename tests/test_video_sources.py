"""Where video bytes come from: byte ranges, local paths, file objects and remote stores.

Remote reads go to an in-process fsspec filesystem that records every byte range it serves, so the
tests can pin what crosses the network: a file fetched once per cache life, exactly its byte range
(never past a tar member's end), and outages raised as ``SparkleHubError``, never as bad data.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import fsspec
import numpy as np
import pytest
from conftest import clip
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from sparkle_video import SparkleDataError, SparkleHubError, VideoReader, write_video
from sparkle_video.data.video import _is_remote, _RangeFile, remote_cache

PROTOCOL = "sparkletest"


class RecordingFile(AbstractBufferedFile):
    def _fetch_range(self, start: int, end: int) -> bytes:
        fs: RecordingFS = self.fs  # type: ignore[assignment]
        fs.fetches.append((self.path, start, end))
        if self.path in fs.failing_reads:
            raise ConnectionError("connection reset by peer")
        return fs.files[self.path][start:end]


class RecordingFS(AbstractFileSystem):
    """A remote store held in memory: ``files`` by path; ``fetches`` lists each ``(path, start, end)`` read."""

    protocol = PROTOCOL
    cachable = False  # a fresh instance per URL opened, so every open shows its storage options
    files: ClassVar[dict[str, bytes]] = {}
    fetches: ClassVar[list[tuple[str, int, int]]] = []
    failing_reads: ClassVar[set[str]] = set()
    tokens: ClassVar[list[object]] = []

    def __init__(self, token: object = None, **kwargs: object):
        super().__init__(**kwargs)
        RecordingFS.tokens.append(token)

    def info(self, path: str, **kwargs: object) -> dict:
        path = self._strip_protocol(path)
        if path == "bucket/outage.mp4":
            raise FileNotFoundError(path) from ConnectionError("name resolution failed")
        if path == "bucket/refused.mp4":
            raise ConnectionRefusedError("connection refused")
        if path == "bucket/broken-store.mp4":
            raise RuntimeError("a bug in the store client")
        if path not in self.files:
            raise FileNotFoundError(path)
        return {"name": path, "size": len(self.files[path]), "type": "file"}

    def _open(
        self, path: str, mode: str = "rb", block_size=None, autocommit=True, cache_options=None, **kwargs
    ):
        path = self._strip_protocol(path)
        return RecordingFile(
            self,
            path,
            mode,
            block_size=block_size or "default",
            cache_type=kwargs.get("cache_type", "readahead"),
            size=self.info(path)["size"],
        )


fsspec.register_implementation(PROTOCOL, RecordingFS, clobber=True)


@pytest.fixture
def store() -> Iterator[type[RecordingFS]]:
    RecordingFS.files, RecordingFS.fetches, RecordingFS.failing_reads = {}, [], set()
    RecordingFS.tokens = []
    remote_cache.clear()
    yield RecordingFS
    remote_cache.clear()


@pytest.fixture(scope="module")
def mp4_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("src") / "clip.mp4"
    write_video(clip(5, frames=9, height=48, width=64), path, fps=16)
    return path.read_bytes()


@pytest.fixture(scope="module")
def frames(mp4_bytes: bytes) -> np.ndarray:
    return VideoReader(mp4_bytes).get_frames(None)


HEAD, TAIL = b"H" * 600, b"T" * 400  # a member inside a larger file (a tar shard)


# -- remote stores ---------------------------------------------------------------------------------
def test_remote_file_is_fetched_once_in_one_exact_request(
    store, mp4_bytes: bytes, frames: np.ndarray
) -> None:
    store.files["bucket/clip.mp4"] = mp4_bytes
    url = f"{PROTOCOL}://bucket/clip.mp4"
    r = VideoReader(url)
    assert r.num_frames == 9
    np.testing.assert_array_equal(r.get_frames(None), frames)
    assert VideoReader(url).read_bytes() == mp4_bytes  # a new reader of the same URL hits the cache too
    assert store.fetches == [("bucket/clip.mp4", 0, len(mp4_bytes))]
    assert remote_cache.get((url, 0, len(mp4_bytes))) == mp4_bytes and len(remote_cache) == 1


def test_remote_member_range_is_fetched_exactly(store, mp4_bytes: bytes, frames: np.ndarray) -> None:
    store.files["bucket/shard.tar"] = HEAD + mp4_bytes + TAIL
    url = f"{PROTOCOL}://bucket/shard.tar"
    member = VideoReader(url, offset=len(HEAD), size=len(mp4_bytes))
    np.testing.assert_array_equal(member.get_frames([0, 8]), frames[[0, 8]])
    assert store.fetches == [("bucket/shard.tar", 600, 600 + len(mp4_bytes))]  # never into the next member
    assert remote_cache.get((url, 600, len(mp4_bytes))) == mp4_bytes
    # without a size the range runs to the end of the file, a separate cache entry
    assert VideoReader(url, offset=len(HEAD) + len(mp4_bytes)).read_bytes() == TAIL
    assert store.fetches[1] == ("bucket/shard.tar", 600 + len(mp4_bytes), 1000 + len(mp4_bytes))


def test_remote_file_larger_than_the_cache_is_streamed_in_range(
    store, monkeypatch: pytest.MonkeyPatch, mp4_bytes: bytes, frames: np.ndarray
) -> None:
    store.files["bucket/shard.tar"] = HEAD + mp4_bytes + TAIL
    url = f"{PROTOCOL}://bucket/shard.tar"
    monkeypatch.setattr(remote_cache, "max_bytes", len(mp4_bytes) - 1)
    member = VideoReader(url, offset=len(HEAD), size=len(mp4_bytes))
    assert member.num_frames == 9
    np.testing.assert_array_equal(member.get_frames(None), frames)
    assert len(remote_cache) == 0  # not kept: every open streams again
    # one request per open (the read buffer holds the whole small member), never past its end; the
    # decode right after the header read reuses the probe's open container
    assert store.fetches == [("bucket/shard.tar", 600, 600 + len(mp4_bytes))]
    member.get_frames([1])
    assert store.fetches == [("bucket/shard.tar", 600, 600 + len(mp4_bytes))] * 2


def test_remote_file_exactly_the_cache_bound_is_kept(
    store, monkeypatch: pytest.MonkeyPatch, mp4_bytes: bytes
) -> None:
    store.files["bucket/clip.mp4"] = mp4_bytes
    monkeypatch.setattr(remote_cache, "max_bytes", len(mp4_bytes))
    r = VideoReader(f"{PROTOCOL}://bucket/clip.mp4")
    r.metadata  # noqa: B018
    r.get_frames([0])
    assert store.fetches == [("bucket/clip.mp4", 0, len(mp4_bytes))] and len(remote_cache) == 1


def test_storage_options_reach_the_store(store, mp4_bytes: bytes) -> None:
    store.files["bucket/clip.mp4"] = mp4_bytes
    VideoReader(f"{PROTOCOL}://bucket/clip.mp4", storage_options={"token": "secret"}).read_bytes()
    assert store.tokens == ["secret"]


def test_chained_urls_get_their_storage_options(store, tmp_path: Path, mp4_bytes: bytes) -> None:
    store.files["bucket/clip.mp4"] = mp4_bytes
    url = f"simplecache::{PROTOCOL}://bucket/clip.mp4"
    options = {PROTOCOL: {"token": "per-protocol"}, "simplecache": {"cache_storage": str(tmp_path)}}
    r = VideoReader(url, storage_options=options)
    assert r.read_bytes() == mp4_bytes and r.num_frames == 9
    assert "per-protocol" in store.tokens and len(remote_cache) == 0  # fsspec's cache, not ours


def test_remote_file_shorter_than_its_range_is_a_data_error(store, mp4_bytes: bytes) -> None:
    store.files["bucket/clip.mp4"] = mp4_bytes
    url = f"{PROTOCOL}://bucket/clip.mp4"
    with pytest.raises(SparkleDataError) as e:
        VideoReader(url, offset=100, size=len(mp4_bytes)).read_bytes()
    assert str(e.value) == (
        f"expected {len(mp4_bytes)} bytes, read {len(mp4_bytes) - 100} (the file is short) | file: {url}"
    )
    assert len(remote_cache) == 0


def test_missing_remote_file_is_a_data_error(store) -> None:
    url = f"{PROTOCOL}://bucket/nope.mp4"
    with pytest.raises(SparkleDataError) as e:
        VideoReader(url).num_frames  # noqa: B018
    assert str(e.value) == f"video file not found | file: {url}"


@pytest.mark.parametrize("name", ["outage", "refused"])
def test_remote_outage_is_a_hub_error_not_bad_data(store, name: str) -> None:
    url = f"{PROTOCOL}://bucket/{name}.mp4"
    with pytest.raises(SparkleHubError, match="the remote store cannot be reached") as e:
        VideoReader(url).num_frames  # noqa: B018
    assert e.value.path == url


def test_remote_read_failures_are_hub_errors(
    store, monkeypatch: pytest.MonkeyPatch, mp4_bytes: bytes
) -> None:
    store.files["bucket/clip.mp4"] = mp4_bytes
    store.failing_reads.add("bucket/clip.mp4")
    url = f"{PROTOCOL}://bucket/clip.mp4"
    with pytest.raises(SparkleHubError, match="cannot be reached") as e:  # fetched whole for the cache
        VideoReader(url).num_frames  # noqa: B018
    assert e.value.path == url
    monkeypatch.setattr(remote_cache, "max_bytes", 10)
    with pytest.raises(SparkleHubError, match="cannot be reached") as e:  # streamed through the decoder
        VideoReader(url).num_frames  # noqa: B018
    assert e.value.path == url


def test_other_store_failures_are_not_hidden(store) -> None:
    with pytest.raises(RuntimeError, match="a bug in the store client"):
        VideoReader(f"{PROTOCOL}://bucket/broken-store.mp4").read_bytes()


def test_which_urls_count_as_remote() -> None:
    assert _is_remote(f"{PROTOCOL}://bucket/x.mp4") and _is_remote("hf://datasets/a/b/x.mp4")
    for local in ["clip.mp4", "/data/clip.mp4", "file:///data/clip.mp4", "local://x", "memory://x.mp4"]:
        assert not _is_remote(local), local
    assert not _is_remote("memory://v/x.mp4?from=s3://bucket")  # the first protocol decides
    assert not _is_remote("simplecache::s3://bucket/x.mp4")  # chained URLs are opened through fsspec


# -- byte ranges and local sources ------------------------------------------------------------------
def test_range_file_reads_seeks_and_clamps_inside_its_window() -> None:
    raw = io.BytesIO(b"0123456789")
    f = _RangeFile(raw, 2, 5)  # "23456"
    assert f.readable() and f.seekable() and f.tell() == 0
    buf = bytearray(3)
    assert f.readinto(buf) == 3 and bytes(buf) == b"234" and f.tell() == 3
    assert f.readinto(buf) == 2 and bytes(buf[:2]) == b"56" and f.tell() == 5
    assert f.readinto(buf) == 0  # the window's end, though the file goes on
    assert f.seek(1) == 1 and f.seek(2, io.SEEK_CUR) == 3 and f.readinto(buf) == 2 and bytes(buf[:2]) == b"56"
    assert f.seek(-2, io.SEEK_END) == 3 and f.seek(-1, io.SEEK_CUR) == 2
    assert f.seek(-9) == 0 and f.seek(99) == 5 and f.seek(4, io.SEEK_END) == 5  # clamped to the window
    assert f.seek(-1, io.SEEK_CUR) == 4 and f.readinto(buf) == 1 and bytes(buf[:1]) == b"6"
    with pytest.raises(ValueError, match=r"^bad whence 3$"):
        f.seek(0, 3)
    f.close()
    assert raw.closed and f.closed


def test_byte_range_of_a_local_file(tmp_path: Path, mp4_bytes: bytes, frames: np.ndarray) -> None:
    path = tmp_path / "shard.bin"
    path.write_bytes(HEAD + mp4_bytes + TAIL)
    member = VideoReader(path, offset=600, size=len(mp4_bytes))
    assert member.read_bytes() == mp4_bytes
    np.testing.assert_array_equal(member.get_frames([3]), frames[[3]])
    assert VideoReader(path, offset=600 + len(mp4_bytes)).read_bytes() == TAIL  # to the end
    assert (
        VideoReader(path, offset=600 + len(mp4_bytes), size=-1).read_bytes() == TAIL
    )  # negative: to the end
    assert VideoReader(path, size=600).read_bytes() == HEAD  # from the start
    tail_only = tmp_path / "tail.bin"
    tail_only.write_bytes(HEAD + mp4_bytes)
    np.testing.assert_array_equal(VideoReader(tail_only, offset=600).get_frames([8]), frames[[8]])
    with VideoReader(tail_only, offset=600)._open_file() as f:
        assert f.seek(0, io.SEEK_END) == len(mp4_bytes)


def test_byte_range_is_read_in_one_read_per_open(mp4_bytes: bytes, frames: np.ndarray) -> None:
    reads: list[int] = []

    class CountingFile(io.BytesIO):
        def read(self, n: int | None = -1) -> bytes:
            reads.append(-1 if n is None else n)
            return super().read(n)

    member = VideoReader(lambda: CountingFile(HEAD + mp4_bytes + TAIL), offset=600, size=len(mp4_bytes))
    assert member.num_frames == 9
    np.testing.assert_array_equal(member.get_frames([8]), frames[[8]])
    # the whole member through the read buffer, once: the decode reuses the header probe's container
    assert reads == [len(mp4_bytes)]
    np.testing.assert_array_equal(member.get_frames([7]), frames[[7]])
    assert reads == [len(mp4_bytes)] * 2  # a second decode opens (and reads) again


def test_empty_byte_range_is_not_a_video(tmp_path: Path, mp4_bytes: bytes) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4_bytes)
    assert VideoReader(path, size=0).read_bytes() == b""
    with pytest.raises(SparkleDataError, match="not a readable video"):
        VideoReader(path, size=0).num_frames  # noqa: B018


def test_file_object_is_read_from_its_start(mp4_bytes: bytes, frames: np.ndarray) -> None:
    f = io.BytesIO(mp4_bytes)
    f.seek(100)
    r = VideoReader(f)
    assert r.read_bytes() == mp4_bytes
    np.testing.assert_array_equal(r.get_frames([1]), frames[[1]])


def test_local_name_holding_double_colons(tmp_path: Path, mp4_bytes: bytes) -> None:
    path = tmp_path / "take::2.mp4"
    path.write_bytes(mp4_bytes)
    assert VideoReader(str(path)).read_bytes() == mp4_bytes and VideoReader(path).num_frames == 9


def test_reader_names(tmp_path: Path, mp4_bytes: bytes) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(mp4_bytes)
    assert VideoReader(path).name == str(path) and VideoReader(str(path), name="shown").name == "shown"
    with open(path, "rb") as f:
        assert VideoReader(f).name == str(path)  # a file object's own name
    assert VideoReader(mp4_bytes).name == "<video>" and VideoReader(io.BytesIO(mp4_bytes)).name == "<video>"
    assert VideoReader(bytearray(mp4_bytes)).read_bytes() == mp4_bytes
    assert VideoReader(memoryview(mp4_bytes)).read_bytes() == mp4_bytes
    fileno_named = open(path, "rb", buffering=0)  # noqa: SIM115
    try:
        with os.fdopen(os.dup(fileno_named.fileno()), "rb") as by_fd:  # name is an int: not a label
            assert VideoReader(by_fd).name == "<video>"
    finally:
        fileno_named.close()


def test_bad_bytes_name_the_reader(mp4_bytes: bytes) -> None:
    with pytest.raises(SparkleDataError) as e:
        VideoReader(b"not a video" * 50, name="shard.tar:x.mp4").num_frames  # noqa: B018
    assert str(e.value).startswith("not a readable video (") and str(e.value).endswith(
        "| file: shard.tar:x.mp4"
    )
