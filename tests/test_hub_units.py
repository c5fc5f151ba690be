"""The Hub layer's pure pieces, in process: error classification, shard choice, windowed tar reads, caches."""

from __future__ import annotations

import io
import tarfile

import httpx2
import pytest
from huggingface_hub import errors as hf

from sparkle_video.data.hub import shards_for
from sparkle_video.data.transport import WindowReader, describe_url, hub_error, iter_remote_tar
from sparkle_video.data.video import RemoteBytesCache
from sparkle_video.errors import SparkleDataError, SparkleHubError


def http_error(cls: type, status: int) -> Exception:
    request = httpx2.Request("GET", "http://127.0.0.1/datasets/a/b/resolve/main/x.mp4")
    response = httpx2.Response(status, request=request)
    return cls(f"{status} error", response=response)


def test_hub_errors_are_told_from_data_errors() -> None:
    err = hub_error(http_error(hf.HfHubHTTPError, 503), repo_id="a/b", revision="c0ffee", path="x.mp4")
    assert isinstance(err, SparkleHubError)
    assert str(err).startswith("the Hub answered HTTP 503") and str(err).endswith(
        "repo: a/b | revision: c0ffee | file: x.mp4"
    )
    assert "revision not found" in str(hub_error(http_error(hf.RevisionNotFoundError, 404)))
    assert "repository not found" in str(hub_error(http_error(hf.RepositoryNotFoundError, 404)))
    dropped = httpx2.RemoteProtocolError("peer closed connection without sending complete message body")
    assert "dropped" in str(hub_error(dropped))
    assert "did not answer in time" in str(hub_error(httpx2.ReadTimeout("timed out")))
    assert "cannot be reached" in str(hub_error(httpx2.ConnectError("refused")))
    # seen through wrappers (HfFileSystem's FileNotFoundError, PyAV re-raising)
    try:
        try:
            raise httpx2.ConnectError("refused")
        except httpx2.ConnectError as inner:
            raise FileNotFoundError("x") from inner
    except FileNotFoundError as wrapped:
        assert hub_error(wrapped) is not None
    # bad data and plain bugs are not outages
    assert hub_error(SparkleDataError("not a readable video")) is None
    assert hub_error(ValueError("bad header")) is None
    assert hub_error(FileNotFoundError("gone")) is None


def test_describe_url() -> None:
    assert describe_url("hf://datasets/org/name@abc/dir/f.tar") == ("org/name", "abc", "dir/f.tar")
    assert describe_url("hf://datasets/org/name/f.tar") == ("org/name", None, "f.tar")
    assert describe_url("s3://bucket/f.tar") == (None, None, "s3://bucket/f.tar")


def test_shards_for_uses_first_members() -> None:
    shards = ["t_source_video_part00.tar", "t_source_video_part01.tar", "t_source_video_part02.tar"]
    firsts = ["t/source_video/Sparkle_t_000000.mp4", "t/source_video/Sparkle_t_000010.mp4", None]
    assert shards_for(["t/source_video/Sparkle_t_000003.mp4"], shards, firsts) == shards[:1]
    assert shards_for(["t/source_video/Sparkle_t_000012.mp4"], shards, firsts) == shards[1:2]
    both = ["t/source_video/Sparkle_t_000000.mp4", "t/source_video/Sparkle_t_000011.mp4"]
    assert shards_for(both, shards, firsts) == shards[:2]


class CountingFile(io.BytesIO):
    """A seekable file that records every read, like a remote file opened without read-ahead."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads: list[tuple[int, int]] = []

    def read(self, n: int = -1) -> bytes:
        start = self.tell()
        out = super().read(n)
        self.reads.append((start, len(out)))
        return out


def make_tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_remote_tar_reads_only_wanted_members_and_stops_when_done() -> None:
    members = {f"t/source_video/{i}.mp4": bytes([i]) * (5000 + 700 * i) for i in range(4)}
    data = make_tar(members)
    raw = CountingFile(data)
    wanted = {"t/source_video/1.mp4"}
    got = list(iter_remote_tar(raw, len(data), "mem://t.tar", wanted))
    assert got == [("t/source_video/1.mp4", members["t/source_video/1.mp4"])]
    assert wanted == set()  # found members are crossed off; an empty set means the next shard is not read
    read = sum(n for _, n in raw.reads)
    assert read <= len(members["t/source_video/1.mp4"]) + 3 * 2048  # member 0's data was never fetched
    assert list(iter_remote_tar(CountingFile(data), len(data), "mem://t.tar", set())) == []
    # every member, in order
    assert dict(iter_remote_tar(CountingFile(data), len(data), "mem://t.tar", None)) == members


def test_remote_tar_damage_is_data_error() -> None:
    data = make_tar({"a.mp4": b"x" * 4000})
    with pytest.raises(SparkleDataError, match="runs past the end"):
        list(iter_remote_tar(CountingFile(data[:2000]), 2000, "mem://t.tar", None))
    evil = make_tar({"../evil.mp4": b"x"})
    with pytest.raises(SparkleDataError, match="unsafe tar member"):
        list(iter_remote_tar(CountingFile(evil), len(evil), "mem://t.tar", None))


def test_window_reader_serves_reads_from_one_fetch() -> None:
    raw = CountingFile(bytes(range(256)) * 40)
    reader = WindowReader(raw, 256 * 40, min_fetch=100)
    reader.fetch(1000, 3000)
    reader.seek(1500)
    assert reader.read(10) == (bytes(range(256)) * 40)[1500:1510]
    reader.seek(3990)
    assert len(reader.read(10)) == 10
    assert raw.reads == [(1000, 3000)]
    reader.seek(9000)
    reader.read(5)
    assert raw.reads[-1] == (9000, 100)  # a miss fetches at least min_fetch, never past the end
    assert reader.read(10_000) and raw.reads[-1][0] + raw.reads[-1][1] <= 256 * 40


def test_remote_bytes_cache_is_bounded_lru() -> None:
    cache = RemoteBytesCache(max_bytes=10)
    cache.put(("a", 0, 4), b"aaaa")
    cache.put(("b", 0, 4), b"bbbb")
    assert cache.get(("a", 0, 4)) == b"aaaa"  # a is now the most recent
    cache.put(("c", 0, 4), b"cccc")  # over the bound: b (least recent) goes
    assert cache.get(("b", 0, 4)) is None and cache.get(("a", 0, 4)) == b"aaaa" and len(cache) == 2
    cache.put(("big", 0, 11), b"x" * 11)  # larger than the bound: never cached
    assert cache.get(("big", 0, 11)) is None
