"""Every kind of bad input raises a SparkleDataError naming file and id, or is skipped and reported."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import add_member, pack

from sparkle_video import SkipReport, SparkleDataError, load_mask, load_sparkle

BAD_ID = "Sparkle_location_000001"


def expect(root: Path, match: str, name_in_error: str, skipped: set[str], **kwargs) -> None:
    with pytest.raises(SparkleDataError, match=match) as e:
        ds = load_sparkle(root, **kwargs)
        for row in ds:  # some problems only show on access (never silently)
            row["source_video"].get_frames(None)
            row["edited_video"].get_frames(None)
    assert name_in_error in str(e.value)
    report = SkipReport()
    ds = load_sparkle(root, errors="skip", skip_report=report, **kwargs)
    assert set(report.ids) == skipped, report.summary()
    assert BAD_ID not in [r["id"] for r in ds] or BAD_ID not in skipped
    assert len(list(ds)) == 3 - len([s for s in skipped if s.startswith("Sparkle_")])


def test_missing_video(fresh_train) -> None:
    root, _ = fresh_train
    (root / "location/source_video" / f"{BAD_ID}.mp4").unlink()
    expect(root, "missing", f"{BAD_ID}.mp4", {BAD_ID})


def test_zero_byte_video(fresh_train) -> None:
    root, _ = fresh_train
    (root / "location/edited_video" / f"{BAD_ID}.mp4").write_bytes(b"")
    expect(root, "empty", f"{BAD_ID}.mp4", {BAD_ID})


@pytest.mark.parametrize("kind", ["truncated", "not-a-video"])
def test_truncated_or_non_video(fresh_train, kind: str) -> None:
    root, _ = fresh_train
    path = root / "location/source_video" / f"{BAD_ID}.mp4"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if kind == "truncated" else b"<html>not a video</html>" * 50)
    expect(root, "video", f"{BAD_ID}.mp4", {BAD_ID})
    with pytest.raises(SparkleDataError, match=BAD_ID):  # caught up front with verify="metadata"
        load_sparkle(root, verify="metadata")


def test_csv_without_expected_columns(fresh_train) -> None:
    root, _ = fresh_train
    (root / "prompts/location_train.csv").write_text("prompt,video\nhello,a.mp4\n")
    with pytest.raises(SparkleDataError, match=r"lacks columns \['src_video', 'tgt_video', 'task'\]") as e:
        load_sparkle(root)
    assert "location_train.csv" in str(e.value)
    report = SkipReport()
    ds = load_sparkle(root, errors="skip", skip_report=report)
    assert [r["theme"] for r in ds] == ["season"] and len(report) == 1 and "theme location" in report.ids[0]


def test_broken_jsonl_line(fresh_train) -> None:
    root, _ = fresh_train
    path = root / "prompts/location_train_metadata.jsonl"
    lines = path.read_text().splitlines()
    lines[1] = lines[1][:25]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SparkleDataError, match="broken JSONL line 2") as e:
        load_sparkle(root)
    assert "location_train_metadata.jsonl" in str(e.value)
    report = SkipReport()
    ds = load_sparkle(root, errors="skip", skip_report=report)
    assert BAD_ID in report.ids and any(k.endswith(":2") for k in report.ids)
    assert sorted(r["id"] for r in ds) == ["Sparkle_location_000000", "Sparkle_season_000000"]


def test_id_in_one_file_only(fresh_train) -> None:
    root, _ = fresh_train
    meta = root / "prompts/location_train_metadata.jsonl"
    lines = meta.read_text().splitlines()
    extra = json.loads(lines[0])
    extra["id"] = "Sparkle_location_000099"
    meta.write_text("\n".join([lines[0], json.dumps(extra)]) + "\n")  # drops 000001, adds 000099
    with pytest.raises(SparkleDataError) as e:
        load_sparkle(root)
    assert BAD_ID in str(e.value) and "not in the metadata JSONL" in str(e.value)
    report = SkipReport()
    load_sparkle(root, errors="skip", skip_report=report)
    assert set(report.ids) == {BAD_ID, "Sparkle_location_000099"}
    assert any("not in the CSV" in reason for _, reason in report.skipped)


@pytest.mark.parametrize(
    "bad",
    ["../outside/x.mp4", "/etc/passwd", "location/../../x.mp4", "a/b/../../../x.mp4", "a\\..\\..\\x.mp4"],
)
def test_unsafe_csv_paths(fresh_train, bad: str) -> None:
    root, _ = fresh_train
    csv_path = root / "prompts/location_train.csv"
    csv_path.write_text(csv_path.read_text().replace(f"location/source_video/{BAD_ID}.mp4", bad))
    with pytest.raises(SparkleDataError, match="not allowed") as e:
        load_sparkle(root)
    assert BAD_ID in str(e.value) and "location_train.csv" in str(e.value)
    report = SkipReport()
    ds = load_sparkle(root, errors="skip", skip_report=report)
    assert report.ids == [BAD_ID] and len(ds) == 2


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize(
    "member", ["../../evil.mp4", "/abs/evil.mp4", "a/../../evil.mp4", "a/b/../../../evil.mp4"]
)
def test_unsafe_tar_member_names(fresh_train, tmp_path_factory, streaming: bool, member: str) -> None:
    root, _ = fresh_train
    out = tmp_path_factory.mktemp("evil")
    pack(root, out, per_shard=5)
    add_member(out / "location_source_video_part00.tar", member, b"x" * 10)
    with pytest.raises(SparkleDataError, match="unsafe tar member") as e:
        list(load_sparkle(out, themes="location", streaming=streaming))
    assert "location_source_video_part00.tar" in str(e.value)


def test_npz_with_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.npz"
    np.savez(path, mask=np.array([{"evil": 1}], dtype=object), shape=np.array([1, 1, 1]))
    with pytest.raises(SparkleDataError, match="unreadable mask") as e:
        load_mask(path)
    assert "m.npz" in str(e.value)
    with pytest.raises(SparkleDataError, match=r"unreadable mask|not an npz"):
        load_mask(b"garbage")


def test_shard_missing_a_member(fresh_train, tmp_path_factory) -> None:
    root, _ = fresh_train
    out = tmp_path_factory.mktemp("gap")
    pack(root, out, per_shard=5)
    tar = out / "location_edited_video_part00.tar"
    with tarfile.open(tar) as tf:
        keep = [(m, tf.extractfile(m).read()) for m in tf.getmembers() if BAD_ID not in m.name]
    with tarfile.open(tar, "w") as tf:
        for m, data in keep:
            tf.addfile(m, io.BytesIO(data))
    for streaming in (False, True):
        with pytest.raises(SparkleDataError, match="edited") as e:
            list(load_sparkle(out, streaming=streaming))
        assert BAD_ID in str(e.value)
        report = SkipReport()
        rows = list(load_sparkle(out, streaming=streaming, errors="skip", skip_report=report))
        assert len(rows) == 2
        assert report.ids == [BAD_ID]


def _zero_byte_edited(root: Path) -> None:
    (root / "location/edited_video" / f"{BAD_ID}.mp4").write_bytes(b"")


def test_streaming_skips_fill_the_report_in_process(fresh_train) -> None:
    root, _ = fresh_train
    _zero_byte_edited(root)
    report = SkipReport()
    ds = load_sparkle(root, streaming=True, errors="skip", skip_report=report)
    assert len(report) == 0  # nothing is read before iteration
    ids = [r["id"] for r in ds]
    assert sorted(ids) == ["Sparkle_location_000000", "Sparkle_season_000000"]
    assert report.ids == [BAD_ID] and "empty" in report.skipped[0][1]


def test_streaming_skips_reach_the_caller_from_dataloader_workers(fresh_train) -> None:
    import torch

    root, _ = fresh_train
    _zero_byte_edited(root)
    (root / "season/source_video/Sparkle_season_000000.mp4").write_bytes(b"not a video" * 40)
    report = SkipReport()
    ds = load_sparkle(root, streaming=True, errors="skip", skip_report=report, verify="metadata")
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2, collate_fn=lambda row: row["id"])
    assert list(loader) == ["Sparkle_location_000000"]
    assert sorted(report.ids) == [BAD_ID, "Sparkle_season_000000"], report.summary()
    assert "2 samples skipped" in report.summary()


def test_streaming_reports_index_problems_too(fresh_train) -> None:
    root, _ = fresh_train
    meta = root / "prompts/location_train_metadata.jsonl"
    meta.write_text(meta.read_text().splitlines()[0] + "\n")  # drops 000001 from the metadata
    report = SkipReport()
    rows = list(load_sparkle(root, streaming=True, errors="skip", skip_report=report))
    assert len(rows) == 2 and report.ids == [BAD_ID]


# -- damaged shards: under "skip" only the damaged shard's samples go, each named -----------------
def _shards(root: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("damaged")
    pack(root, out, per_shard=5)
    return out


def _member_offset(tar: Path, needle: str) -> tuple[int, int]:
    with tarfile.open(tar) as tf:
        info = next(m for m in tf.getmembers() if needle in m.name)
        return info.offset, info.offset_data


def _set_size_field(tar: Path, needle: str, field: bytes) -> None:
    """Overwrite a member's 12-byte size field and fix the header checksum."""
    offset = _member_offset(tar, needle)[1] - 512  # the member's own header (after any pax header)
    data = bytearray(tar.read_bytes())
    data[offset + 124 : offset + 136] = field
    header = data[offset : offset + 512]
    header[148:156] = b" " * 8
    data[offset + 148 : offset + 156] = b"%06o\0 " % sum(header)
    tar.write_bytes(bytes(data))


def _load_all(out: Path, streaming: bool, **kwargs) -> list[dict]:
    rows = list(load_sparkle(out, streaming=streaming, **kwargs))
    for row in rows:  # what is kept decodes in full
        row["source_video"].get_frames(None)
        row["edited_video"].get_frames(None)
    return rows


@pytest.mark.parametrize("streaming", [False, True])
def test_truncated_shard_keeps_the_intact_members(fresh_train, tmp_path_factory, streaming: bool) -> None:
    root, _ = fresh_train
    out = _shards(root, tmp_path_factory)
    tar = out / "location_source_video_part00.tar"
    _, data_start = _member_offset(tar, BAD_ID)
    tar.write_bytes(tar.read_bytes()[: data_start + 100])  # cut inside the second member
    with pytest.raises(SparkleDataError) as e:
        _load_all(out, streaming)
    assert "location_source_video_part00.tar" in str(e.value)
    report = SkipReport()
    rows = _load_all(out, streaming, errors="skip", skip_report=report)
    assert sorted(r["id"] for r in rows) == ["Sparkle_location_000000", "Sparkle_season_000000"]
    shard_keys = [k for k in report.ids if k.startswith("shard ")]
    assert len(shard_keys) == 1 and shard_keys[0].endswith("location_source_video_part00.tar")
    assert [k for k in report.ids if not k.startswith("shard ")] == [BAD_ID]
    reason = dict(report.skipped)[BAD_ID]
    assert "location_source_video_part00.tar" in reason and "damaged" in reason


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize(
    "field", [b"77777777777\0", b"\x80" + (2**80).to_bytes(11, "big")], ids=["octal-8GB", "base256-2**80"]
)
def test_absurd_header_size_is_a_clear_error(
    fresh_train, tmp_path_factory, streaming: bool, field: bytes
) -> None:
    root, _ = fresh_train
    out = _shards(root, tmp_path_factory)
    tar = out / "location_edited_video_part00.tar"
    _set_size_field(tar, BAD_ID, field)
    with pytest.raises(SparkleDataError, match=r"claims [0-9]+ bytes") as e:
        _load_all(out, streaming)
    assert "location_edited_video_part00.tar" in str(e.value) and "Sparkle_location_000001.mp4" in str(
        e.value
    )
    report = SkipReport()
    rows = _load_all(out, streaming, errors="skip", skip_report=report)
    assert sorted(r["id"] for r in rows) == ["Sparkle_location_000000", "Sparkle_season_000000"]
    assert [k for k in report.ids if not k.startswith("shard ")] == [BAD_ID]


@pytest.mark.parametrize("streaming", [False, True])
def test_unsafe_member_skips_only_that_shard_under_skip(
    fresh_train, tmp_path_factory, streaming: bool
) -> None:
    root, _ = fresh_train
    out = _shards(root, tmp_path_factory)
    add_member(out / "location_source_video_part00.tar", "a/../../evil.mp4", b"x" * 10)
    report = SkipReport()
    rows = _load_all(out, streaming, errors="skip", skip_report=report)
    assert len(rows) == 3  # the members before the unsafe one are intact and kept
    assert len(report) == 1 and report.ids[0].endswith("location_source_video_part00.tar")
    assert "unsafe tar member" in report.skipped[0][1]


# -- selections -----------------------------------------------------------------------------------
@pytest.mark.parametrize("streaming", [False, True])
def test_selection_matching_nothing_names_the_values(train_folder, streaming: bool) -> None:
    root, _ = train_folder
    with pytest.raises(SparkleDataError, match=r"ids=\['Sparkle_location_000099'\] match no sample"):
        load_sparkle(root, ids=["Sparkle_location_000099"], streaming=streaming)
    with pytest.raises(SparkleDataError, match=r"subthemes=\['urbn'\] match no sample"):
        load_sparkle(root, subthemes=["urbn"], streaming=streaming)
    with pytest.raises(SparkleDataError, match="leaves no sample"):  # each matches, together they do not
        load_sparkle(root, ids=["Sparkle_location_000000"], subthemes=["rural"], streaming=streaming)


def test_partial_selection_warns_with_the_unknown_values(train_folder) -> None:
    root, _ = train_folder
    with pytest.warns(UserWarning, match=r"ids \['Sparkle_season_000042'\] match no sample"):
        ds = load_sparkle(root, ids=["Sparkle_location_000001", "Sparkle_season_000042"])
    assert ds["id"][:] == ["Sparkle_location_000001"]
    with pytest.warns(UserWarning, match=r"subthemes \['nowhere'\]"):
        ds = load_sparkle(root, subthemes=["rural", "nowhere"], themes="location")
    assert [r["subtheme"] for r in ds] == ["rural"]
