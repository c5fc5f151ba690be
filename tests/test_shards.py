"""Tar shards read in place: member byte ranges, streaming order, selection and every kind of damage."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from sparkle_video import SparkleDataError
from sparkle_video.data import shards
from sparkle_video.data.shards import TarMember, index_tar, iter_tar, scan_tar

SHARD = "location_source_video_part00.tar"
MEMBERS = [("location/source_video/a.mp4", b"a" * 700), ("location/source_video/b.mp4", b"b" * 300)]


def make_tar(members: list[tuple[str, bytes]] = MEMBERS, extra: bool = False) -> bytes:
    """An uncompressed tar; ``extra`` adds a directory and a symlink (neither is a regular file)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        if extra:
            folder = tarfile.TarInfo("location/source_video")
            folder.type = tarfile.DIRTYPE
            tf.addfile(folder)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if extra:
            link = tarfile.TarInfo("location/source_video/link.mp4")
            link.type, link.linkname = tarfile.SYMTYPE, "a.mp4"
            tf.addfile(link)
    return buf.getvalue()


def test_index_gives_the_byte_range_of_every_regular_member() -> None:
    data = make_tar(extra=True)
    members = index_tar(io.BytesIO(data), SHARD)
    assert members == {
        "location/source_video/a.mp4": TarMember("location/source_video/a.mp4", 1024, 700),
        "location/source_video/b.mp4": TarMember("location/source_video/b.mp4", 2560, 300),
    }
    for name, content in MEMBERS:
        m = members[name]
        assert data[m.offset : m.offset + m.size] == content


def test_member_names_are_normalised() -> None:
    members = index_tar(io.BytesIO(make_tar([("./location//a.mp4", b"x")])), SHARD)
    assert list(members) == ["location/a.mp4"] and members["location/a.mp4"].name == "location/a.mp4"


def test_a_member_cut_by_one_byte_is_damage_and_the_earlier_ones_stay() -> None:
    data = make_tar()
    end = 2048 + 300  # the last byte of member b
    members, damage = scan_tar(io.BytesIO(data[: end - 1]), SHARD)
    assert list(members) == ["location/source_video/a.mp4"]
    assert damage is not None and str(damage) == (
        "tar member 'location/source_video/b.mp4' at byte 1536 claims 300 bytes, past the end of the shard "
        f"(2347 bytes): the shard is truncated or its header is damaged | file: {SHARD}"
    )
    with pytest.raises(SparkleDataError, match="past the end of the shard") as e:
        index_tar(io.BytesIO(data[: end - 1]), SHARD)
    assert e.value.path == SHARD


def test_a_member_ending_exactly_at_the_cut_is_kept() -> None:
    data = make_tar()
    members, damage = scan_tar(io.BytesIO(data[: 2048 + 300]), SHARD)  # b's bytes all there, end blocks gone
    assert list(members) == ["location/source_video/a.mp4", "location/source_video/b.mp4"]
    assert damage is not None and "not a readable uncompressed tar" in str(damage)


def test_compressed_tars_are_refused() -> None:
    """Byte ranges only make sense in an uncompressed tar, so a gzipped one is damage, not read through."""
    blob = gzip.compress(make_tar())
    members, damage = scan_tar(io.BytesIO(blob), SHARD)
    assert members == {} and damage is not None and "not a readable uncompressed tar" in str(damage)
    with pytest.raises(SparkleDataError, match="not a readable uncompressed tar"):
        list(iter_tar(io.BytesIO(blob), SHARD))


def test_unsafe_member_name_names_the_shard() -> None:
    data = make_tar([MEMBERS[0], ("../evil.mp4", b"x")])
    members, damage = scan_tar(io.BytesIO(data), SHARD)
    assert list(members) == ["location/source_video/a.mp4"]
    assert str(damage) == f"unsafe tar member name: '..' not allowed in path: '../evil.mp4' | file: {SHARD}"
    with pytest.raises(SparkleDataError, match=r"unsafe tar member name: '\.\.' not allowed") as e:
        list(iter_tar(io.BytesIO(data), SHARD))
    assert e.value.path == SHARD


def test_iter_yields_regular_members_in_stream_order() -> None:
    data = make_tar(extra=True)
    assert list(iter_tar(io.BytesIO(data), SHARD)) == MEMBERS
    assert list(iter_tar(io.BytesIO(data), SHARD, total_size=len(data))) == MEMBERS
    wanted = {"location/source_video/b.mp4"}
    assert list(iter_tar(io.BytesIO(data), SHARD, wanted=wanted)) == [MEMBERS[1]]
    assert list(iter_tar(io.BytesIO(data), SHARD, wanted=set())) == []


def test_iter_names_a_member_past_the_known_size_before_reading_it() -> None:
    data = make_tar()
    yielded: list[str] = []
    with pytest.raises(SparkleDataError) as e:
        for name, _ in iter_tar(io.BytesIO(data[:2347]), SHARD, total_size=2347):
            yielded.append(name)
    assert yielded == ["location/source_video/a.mp4"]
    assert str(e.value) == (
        "tar member 'location/source_video/b.mp4' at byte 1536 claims 300 bytes, past the end of the shard "
        f"(2347 bytes): the shard is truncated or its header is damaged | file: {SHARD}"
    )
    # ending exactly at the known size is no damage of that member (the missing end blocks are)
    yielded.clear()
    with pytest.raises(SparkleDataError, match="not a readable uncompressed tar"):
        for name, _ in iter_tar(io.BytesIO(data[:2348]), SHARD, total_size=2348):
            yielded.append(name)
    assert yielded == [MEMBERS[0][0], MEMBERS[1][0]]


def test_iter_refuses_members_larger_than_any_video(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shards, "MAX_MEMBER_BYTES", 300)
    data = make_tar([MEMBERS[1]])  # exactly the bound: read
    assert list(iter_tar(io.BytesIO(data), SHARD)) == [MEMBERS[1]]
    with pytest.raises(SparkleDataError, match=r"claims 301 bytes, more than any video \(300 bytes\)") as e:
        list(iter_tar(io.BytesIO(make_tar([("x.mp4", b"x" * 301)])), SHARD))
    assert e.value.path == SHARD
