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


@pytest.mark.parametrize("bad", ["../outside/x.mp4", "/etc/passwd"])
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
@pytest.mark.parametrize("member", ["../../evil.mp4", "/abs/evil.mp4"])
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
        if not streaming:
            assert report.ids == [BAD_ID]
