"""A sample never gets another sample's bytes or wrong bytes, and hostile inputs fail as named errors.

Each case builds its own hostile fixture: tars with a name stored twice or a GNU sparse member, shards
rewritten between indexing and reading or during a stream, masks that would inflate far past their file,
an mp4 whose header claims 2^31 frames, JSON nested 200k deep, prompt files of an unknown theme.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import tarfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import clip, pack, sid, write_train

from sparkle_video import SkipReport, SparkleDataError, VideoReader, load_mask, load_sparkle, write_video
from sparkle_video.data.collate import SparkleCollator
from sparkle_video.data.masks import MAX_MASK_BITS
from sparkle_video.data.records import read_jsonl
from sparkle_video.data.shards import index_tar, iter_tar, scan_shard

THEME = "location"


def ids_and_bytes(ds) -> dict[str, tuple[bytes, bytes]]:
    return {r["id"]: (r["source_video"].read_bytes(), r["edited_video"].read_bytes()) for r in ds}


def originals(folder: Path, info: dict) -> dict[str, tuple[bytes, bytes]]:
    return {
        i: ((folder / v["source"]).read_bytes(), (folder / v["edited"]).read_bytes()) for i, v in info.items()
    }


def load(root: Path, streaming: bool, errors: str = "raise", report: SkipReport | None = None, **kw):
    return load_sparkle(root, streaming=streaming, errors=errors, skip_report=report, progress=False, **kw)


@pytest.fixture
def three(tmp_path: Path) -> tuple[Path, Path, dict]:
    """A 3-sample folder and its shards (one source and one edited shard)."""
    folder, shards = tmp_path / "folder", tmp_path / "shards"
    info = write_train(folder, {THEME: 3}, frames=5)
    pack(folder, shards, per_shard=5)
    return folder, shards, info


def rewrite_tar(path: Path, members: list[tuple[str, bytes]], *, sparse: set[str] = frozenset()) -> None:
    """Write ``members`` as a tar (GNU headers); names in ``sparse`` become hand-made GNU sparse members."""
    out = io.BytesIO()
    for name, data in members:
        if name in sparse:
            out.write(gnu_sparse_member(name, data))
            continue
        info = tarfile.TarInfo(name)
        info.size = len(data)
        out.write(info.tobuf(tarfile.GNU_FORMAT))
        out.write(data + b"\0" * (-len(data) % 512))
    out.write(b"\0" * 1024)
    out.write(b"\0" * (-out.tell() % tarfile.RECORDSIZE))  # padded to whole records, as tarfile writes
    path.write_bytes(out.getvalue())


def gnu_sparse_member(name: str, data: bytes, hole: int = 4096) -> bytes:
    """A GNU sparse (type ``S``) member: ``data`` stored once, then a ``hole`` of zeros that is not stored.

    The stored size (``len(data)``) and the real size (``len(data) + hole``) differ, so a reader that
    takes ``offset_data + size`` as the file's bytes gets the next member's header instead.
    """
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.type = tarfile.GNUTYPE_SPARSE
    buf = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    buf[386:398] = tarfile.itn(0, 12, tarfile.GNU_FORMAT)  # sparse map entry 0: offset
    buf[398:410] = tarfile.itn(len(data), 12, tarfile.GNU_FORMAT)  # ... and bytes stored
    buf[482] = 0  # no extended sparse headers
    buf[483:495] = tarfile.itn(len(data) + hole, 12, tarfile.GNU_FORMAT)  # real size
    buf[148:156] = b"        "
    buf[148:156] = b"%06o\0 " % sum(buf)
    return bytes(buf) + data + b"\0" * (-len(data) % 512)


def tar_members(path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(path) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]


# -- 1. one member name, one sample ---------------------------------------------------------------
@pytest.mark.parametrize("streaming", [False, True])
def test_duplicate_member_name_raises_in_every_mode(three, streaming: bool) -> None:
    folder, shards, info = three
    tar = shards / f"{THEME}_source_video_part00.tar"
    members = tar_members(tar)
    victim = info[sid(THEME, 1)]["source"]
    other = (folder / info[sid(THEME, 2)]["source"]).read_bytes()
    rewrite_tar(tar, [*members, (victim, other)])  # the same path again, with another sample's bytes
    with pytest.raises(SparkleDataError, match=rf"tar member '{victim}' is stored 2 times") as e:
        list(load(shards, streaming))
    assert tar.name in str(e.value)


def test_duplicate_member_skip_is_the_same_in_both_modes(three) -> None:
    folder, shards, info = three
    tar = shards / f"{THEME}_edited_video_part00.tar"
    victim = info[sid(THEME, 0)]["edited"]
    rewrite_tar(tar, [(victim, b"a first copy"), *tar_members(tar)])
    expected = originals(folder, info)
    results = {}
    for streaming in (False, True):
        report = SkipReport()
        got = ids_and_bytes(load(shards, streaming, "skip", report))
        assert got == {i: expected[i] for i in (sid(THEME, 1), sid(THEME, 2))}  # never a wrong byte
        assert report.ids == [sid(THEME, 0)]
        reason = report.skipped[0][1]
        assert f"'{victim}' is stored 2 times" in reason
        results[streaming] = (sorted(got), report.skipped)
    assert results[False] == results[True]


def test_stray_refused_member_and_damage_are_named_once_when_a_theme_streams_as_units(three, caplog) -> None:
    """Streaming local shards cuts a theme into several units: a duplicated member that no row names, and
    a damaged shard, are each reported once (not once per unit), exactly as without streaming."""
    _, shards, _ = three
    src = shards / f"{THEME}_source_video_part00.tar"
    stray = f"{THEME}/source_video/Sparkle_{THEME}_999999.mp4"
    rewrite_tar(src, [*tar_members(src), (stray, b"one"), (stray, b"two")])
    edt = shards / f"{THEME}_edited_video_part00.tar"
    edt.write_bytes(edt.read_bytes()[: edt.stat().st_size // 2])  # cut inside a member: damaged
    reports = {}
    for streaming in (False, True):
        report = SkipReport()
        caplog.clear()
        with caplog.at_level("WARNING", logger="sparkle_video"):
            ids_and_bytes(load(shards, streaming, "skip", report))
        assert caplog.text.count(f"skipped shard {src}::{stray}") == 1  # logged once, not once per unit
        assert caplog.text.count(f"skipped shard {edt}: ") == 1
        keys = [key for key, _ in report.skipped]
        reports[streaming] = sorted(keys)
        assert sum(stray in key for key in keys) == 1
        assert sum(key.startswith("shard ") and key.endswith(edt.name) for key in keys) == 1
    assert reports[False] == reports[True]


def test_duplicate_across_shards_is_refused(tmp_path: Path) -> None:
    folder, shards = tmp_path / "f", tmp_path / "s"
    info = write_train(folder, {THEME: 2}, frames=5)
    pack(folder, shards, per_shard=1)
    first = shards / f"{THEME}_source_video_part00.tar"
    second = shards / f"{THEME}_source_video_part01.tar"
    rewrite_tar(second, [*tar_members(second), *tar_members(first)])  # sample 0's source in both shards
    report = SkipReport()
    ds = load(shards, False, "skip", report)
    assert [r["id"] for r in ds] == [sid(THEME, 1)]
    assert report.ids == [sid(THEME, 0)] and "stored in 2 shards" in report.skipped[0][1]
    with pytest.raises(SparkleDataError, match="stored in 2 shards"):
        load(shards, False)
    assert info  # the folder is the reference the shards were packed from


def test_sparse_member_is_refused_never_read_as_a_byte_range(tmp_path: Path) -> None:
    payload, after = b"P" * 700, b"next member's bytes"
    tar = tmp_path / "sparse.tar"
    rewrite_tar(tar, [("a.mp4", payload), ("b.mp4", after)], sparse={"a.mp4"})
    with tarfile.open(tar) as tf:  # the fixture is what tarfile itself calls a sparse member
        assert tf.getmember("a.mp4").issparse()
        assert tf.extractfile("a.mp4").read() == payload + b"\0" * 4096
    with open(tar, "rb") as f:
        scan = scan_shard(f, str(tar))
    assert list(scan.members) == ["b.mp4"] and scan.damage is None
    assert "a.mp4" in scan.refused and "is a sparse file" in str(scan.refused["a.mp4"])
    with open(tar, "rb") as f, pytest.raises(SparkleDataError, match=r"'a\.mp4' at byte 0 is a sparse file"):
        index_tar(f, str(tar))
    with open(tar, "rb") as f, pytest.raises(SparkleDataError, match="is a sparse file") as e:
        list(iter_tar(f, str(tar)))
    assert "sparse.tar" in str(e.value)
    with open(tar, "rb") as f:
        assert list(iter_tar(f, str(tar), expected=scan)) == [("b.mp4", after)]


@pytest.mark.parametrize("streaming", [False, True])
def test_sparse_member_in_a_shard_skips_its_sample_only(three, streaming: bool) -> None:
    folder, shards, info = three
    tar = shards / f"{THEME}_source_video_part00.tar"
    victim = info[sid(THEME, 1)]["source"]
    rewrite_tar(tar, tar_members(tar), sparse={victim})
    report = SkipReport()
    got = ids_and_bytes(load(shards, streaming, "skip", report))
    expected = originals(folder, info)
    assert got == {i: expected[i] for i in (sid(THEME, 0), sid(THEME, 2))}
    assert report.ids == [sid(THEME, 1)] and "is a sparse file" in report.skipped[0][1]
    with pytest.raises(SparkleDataError, match=rf"'{victim}' at byte \d+ is a sparse file"):
        list(load(shards, streaming))


# -- 2. files don't change under a reader ---------------------------------------------------------
def reordered(tar: Path) -> bytes:
    """The same members in reverse order: same size, every byte range now holds another sample."""
    members = tar_members(tar)
    tmp = tar.with_suffix(".tmp")
    rewrite_tar(tmp, members[::-1])
    data = tmp.read_bytes()
    tmp.unlink()
    size = tar.stat().st_size
    assert len(data) <= size
    return data + b"\0" * (size - len(data))  # trailing zero blocks: the same size, still a valid tar


@pytest.mark.parametrize("how", ["replaced", "in place", "in place, mtime kept"])
def test_shard_changed_between_index_and_read(three, how: str) -> None:
    folder, shards, info = three
    ds = load(shards, False)
    tar = shards / f"{THEME}_source_video_part00.tar"
    first = ds[0]["source_video"]
    assert first.read_bytes() == (folder / info[sid(THEME, 0)]["source"]).read_bytes()
    new = reordered(tar)
    assert len(new) == tar.stat().st_size
    st = tar.stat()
    if how == "replaced":
        tmp = tar.with_name("new.tar")
        tmp.write_bytes(new)
        os.replace(tmp, tar)
    else:
        with open(tar, "r+b") as f:
            f.write(new)
        if how == "in place, mtime kept":  # only the member header checksum can tell
            os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns))
    for row in (ds[0], ds[1]):
        reader = row["source_video"]
        with pytest.raises(SparkleDataError, match="changed") as e:
            reader.read_bytes()
        assert tar.name in str(e.value)
        with pytest.raises(SparkleDataError, match="changed"):
            reader.get_frames([0])


def test_folder_video_changed_after_loading(three) -> None:
    folder, _, info = three
    ds = load(folder, False)
    path = folder / info[sid(THEME, 0)]["source"]
    write_video(clip(99, 5), path, fps=16)
    with pytest.raises(SparkleDataError, match="file changed since it was indexed") as e:
        ds[0]["source_video"].metadata  # noqa: B018
    assert path.name in str(e.value)


@pytest.mark.parametrize("how", ["replaced", "in place"])
def test_shard_changed_while_streaming(three, how: str) -> None:
    folder, shards, info = three
    tar = shards / f"{THEME}_source_video_part00.tar"
    it = iter(load(shards, True))
    row = next(it)
    assert row["source_video"].read_bytes() == (folder / info[row["id"]]["source"]).read_bytes()
    new = reordered(tar)
    if how == "replaced":
        tmp = tar.with_name("new.tar")
        tmp.write_bytes(new)
        os.replace(tmp, tar)
    else:
        with open(tar, "r+b") as f:
            f.write(new)
    with pytest.raises(SparkleDataError, match="changed") as e:
        next(it)
    assert tar.name in str(e.value)


# -- 3. everything written reads back (the property tests are in test_roundtrip_property.py) -----
def test_u2028_written_by_an_old_writer_reads_back(tmp_path: Path) -> None:
    """A JSONL holding U+2028 / U+0085 raw (valid JSON) is one record per ``\\n`` line."""
    text = json.dumps({"id": "a", "prompt": "one\u2028two\x85three"}, ensure_ascii=False) + "\n"
    assert read_jsonl(text, "m.jsonl") == {"a": {"id": "a", "prompt": "one\u2028two\x85three"}}


# -- 4. bounded resources, named errors -----------------------------------------------------------
def npz(members: dict[str, bytes], compress: bool = True) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def npy_header(shape: tuple[int, ...], dtype: str = "|u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def zip_bomb(inflated: int) -> bytes:
    """An npz whose ``shape`` says 8 pixels but whose ``mask.npy`` inflates to ``inflated`` bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("shape.npy", npy(np.array([1, 1, 8])))
        with zf.open("mask.npy", "w", force_zip64=True) as f:
            f.write(npy_header((inflated,)))
            chunk = b"\0" * (1 << 20)
            for _ in range(inflated >> 20):
                f.write(chunk)
    return buf.getvalue()


def peak_bytes(call) -> int:
    tracemalloc.start()
    try:
        call()
    except SparkleDataError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def test_zip_bomb_mask_is_refused_before_inflating() -> None:
    bomb = zip_bomb(256 << 20)
    assert len(bomb) < 1 << 20  # a sub-MB file that would inflate to 256 MiB
    with pytest.raises(SparkleDataError, match=r"shape \(1, 1, 8\) packs into 1 bytes") as e:
        load_mask(bomb, name="bomb.npz")
    assert "file: bomb.npz" in str(e.value)
    assert peak_bytes(lambda: load_mask(bomb, name="bomb.npz")) < 8 << 20


@pytest.mark.parametrize(
    "shape, match",
    [
        ((82, 4096, 4096), rf"over the limit of {MAX_MASK_BITS} = 81 x 4096 x 4096"),
        ((1 << 14, 1 << 14, 1 << 15), "over the limit"),  # an 8 TiB claim (1 TiB packed)
        ((0, 4, 4), "three positive sizes"),
    ],
)
def test_mask_shape_claims_are_capped(shape: tuple[int, ...], match: str) -> None:
    blob = npz({"shape.npy": npy(np.array(shape, np.int64)), "mask.npy": npy_header((1 << 40,))})
    with pytest.raises(SparkleDataError, match=match) as e:
        load_mask(blob, name="huge.npz")
    assert "huge.npz" in str(e.value)


def test_mask_npy_header_claiming_a_tebibyte_is_refused() -> None:
    blob = npz({"shape.npy": npy(np.array([1, 2, 4])), "mask.npy": npy_header((1 << 40,)) + b"\0"})
    with pytest.raises(SparkleDataError, match=r"packs into 1 bytes, but mask.npy declares .*1099511627776"):
        load_mask(blob, name="tib.npz")


def test_mask_stored_size_must_match_the_declared_one() -> None:
    blob = npz({"shape.npy": npy(np.array([1, 2, 4])), "mask.npy": npy_header((1,)) + b"\xff" * 5000})
    with pytest.raises(SparkleDataError, match=r"mask\.npy stores \d+ bytes") as e:
        load_mask(blob, name="long.npz")
    assert "long.npz" in str(e.value)


@pytest.mark.parametrize(
    "shape_array, match",
    [
        (np.array([1.0, 2.0, 4.0]), "shape must be 3 integers, got a float64 array"),
        (np.array([[1, 2, 4]]), r"shape \(1, 3\)"),
        (np.array([1, 2]), r"shape \(2,\)"),
    ],
)
def test_mask_shape_of_the_wrong_kind_is_a_named_error(shape_array: np.ndarray, match: str) -> None:
    blob = npz({"shape.npy": npy(shape_array), "mask.npy": npy(np.zeros(1, np.uint8))})
    with pytest.raises(SparkleDataError, match=match) as e:
        load_mask(blob, name="float.npz")
    assert "float.npz" in str(e.value)


def huge_stts_mp4(frames: int = 2**31) -> bytes:
    buf = io.BytesIO()
    write_video(clip(1, 4, 32, 32), buf, fps=16)
    data = bytearray(buf.getvalue())
    at = data.find(b"stts")
    assert struct.unpack(">I", data[at + 8 : at + 12])[0] == 1  # one (count, delta) entry
    struct.pack_into(">I", data, at + 12, frames)
    return bytes(data)


def test_huge_stts_claim_is_refused_by_every_reader_path(tmp_path: Path) -> None:
    path = tmp_path / "Sparkle_location_000000.mp4"
    path.write_bytes(huge_stts_mp4())
    reader = VideoReader(path)
    for call in (
        lambda: reader.metadata,
        lambda: reader.get_frames(),
        lambda: reader.get_frames([0]),
        lambda: reader.to_tensor(),
        lambda: SparkleCollator(num_frames=4, size=(16, 16))([{"id": "x", "source_video": reader}]),
    ):
        with pytest.raises(SparkleDataError, match=r"claims 2147483648 frames in a 1\d{3}-byte file") as e:
            call()
        assert path.name in str(e.value)


def test_huge_stts_mp4_is_a_named_skip_when_loading(tmp_path: Path) -> None:
    info = write_train(tmp_path, {THEME: 2}, frames=5)
    (tmp_path / info[sid(THEME, 1)]["edited"]).write_bytes(huge_stts_mp4())
    report = SkipReport()
    ds = load(tmp_path, False, "skip", report)
    assert [r["id"] for r in ds] == [sid(THEME, 0)]
    assert report.ids == [sid(THEME, 1)] and "claims 2147483648 frames" in report.skipped[0][1]


def test_impossible_requests_are_named_not_memory_errors(tmp_path: Path) -> None:
    path = tmp_path / "ok.mp4"
    write_video(clip(2, 3, 32, 32), path, fps=16)
    reader = VideoReader(path)
    with pytest.raises(SparkleDataError, match=r"cannot allocate 3000000000000 bytes for 1 frames") as e:
        reader.get_frames([0], size=(1_000_000, 1_000_000))
    assert "ok.mp4" in str(e.value)
    with pytest.raises(SparkleDataError, match="cannot allocate the source_video batch") as e:
        SparkleCollator(num_frames=3, size=(200_000, 200_000))([{"id": "x", "source_video": reader}])
    assert "ok.mp4" in str(e.value)


DEEP = "[" * 200_000 + "]" * 200_000


def test_deep_json_in_metadata_is_a_named_bad_row(fresh_train) -> None:
    root, _ = fresh_train
    meta = root / "prompts" / f"{THEME}_train_metadata.jsonl"
    lines = meta.read_text().splitlines()
    meta.write_text("\n".join([DEEP, *lines[1:]]) + "\n")
    with pytest.raises(SparkleDataError, match="broken JSONL line 1 \\(nested too deeply") as e:
        load(root, False)
    assert meta.name in str(e.value)
    report = SkipReport()
    ds = load(root, False, "skip", report)
    assert sorted(r["id"] for r in ds) == [sid(THEME, 1), sid("season", 0)]
    keys = dict(report.skipped)
    assert any(k.endswith(f"{meta.name}:1") and "nested too deeply" in v for k, v in keys.items())
    assert sid(THEME, 0) in keys  # its row lost its metadata: named too


def test_deep_json_in_a_score_file_is_named_under_raise_and_skip(fresh_train) -> None:
    root, _ = fresh_train
    scores = root / "intermediate_data" / THEME / "edited_video_score.jsonl"
    scores.parent.mkdir(parents=True)
    good = {"id": sid(THEME, 1), "editscore": {"O_score": 9}}
    scores.write_text(DEEP + "\n" + json.dumps(good) + "\n")
    with pytest.raises(SparkleDataError, match="broken JSONL line 1") as e:
        load(root, False, themes=THEME, min_scores={"edited_video_score": 8})
    assert scores.name in str(e.value)
    report = SkipReport()
    ds = load(root, False, "skip", report, themes=THEME, min_scores={"edited_video_score": 8})
    assert [r["id"] for r in ds] == [sid(THEME, 1)]
    assert len(report) == 1 and report.ids[0].endswith("edited_video_score.jsonl:1")


# -- the unknown-theme fix ------------------------------------------------------------------------
@pytest.mark.parametrize("errors", ["raise", "skip"])
def test_pairs_of_an_unknown_theme_are_counted_and_named(fresh_train, errors: str) -> None:
    root, _ = fresh_train
    shutil.copy(root / "prompts" / f"{THEME}_train.csv", root / "prompts" / "mars_train.csv")
    report = SkipReport()
    with pytest.warns(
        UserWarning, match=r"mars_train.csv: 2 pairs not loaded: theme 'mars' is not a Sparkle theme"
    ):
        ds = load(root, False, errors, report)
    assert sorted(r["id"] for r in ds) == [sid(THEME, 0), sid(THEME, 1), sid("season", 0)]
    assert report.ids == [sid(THEME, 0), sid(THEME, 1)]  # the ids the mars file lists
    assert all("'mars' is not a Sparkle theme" in reason for _, reason in report.skipped)
    assert len(load(root, False, errors, themes=THEME)) == 2  # a named selection does not look at it
