"""Prompt CSV / metadata JSONL parsing: repeated ids are never resolved silently."""

from __future__ import annotations

import json

import pytest

from sparkle_video import SkipReport, SparkleDataError
from sparkle_video.records import join_bench, join_train, read_jsonl

CSV_PATH, JSONL_PATH = "prompts/location_train.csv", "prompts/location_train_metadata.jsonl"


def sid(n: int) -> str:
    return f"Sparkle_location_{n:06d}"


def csv_text(ids: list[str]) -> str:
    lines = ["prompt,src_video,tgt_video,task"]
    lines += [f"prompt of {i},location/source_video/{i}.mp4,location/edited_video/{i}.mp4,{i}" for i in ids]
    return "\n".join(lines) + "\n"


def meta_line(i: str, scene: str = "rooftop") -> str:
    return json.dumps(
        {"id": i, "prompt": f"prompt of {i}", "metadata": {"chosen_keyword": f"urban: {scene}"}}
    )


def test_csv_repeating_an_id_raises() -> None:
    ids = [sid(0), sid(1), sid(0)]
    meta = "\n".join(meta_line(i) for i in (sid(0), sid(1))) + "\n"
    with pytest.raises(SparkleDataError, match="row 4 repeats id") as e:
        join_train("location", csv_text(ids), CSV_PATH, meta, JSONL_PATH)
    assert sid(0) in str(e.value) and CSV_PATH in str(e.value)
    report = SkipReport()
    entries = join_train("location", csv_text(ids), CSV_PATH, meta, JSONL_PATH, errors="skip", report=report)
    assert [x.id for x in entries] == [sid(0), sid(1)] and report.ids == [sid(0)]


def test_jsonl_repeating_an_id_with_different_content_raises() -> None:
    meta = "\n".join([meta_line(sid(0)), meta_line(sid(1)), meta_line(sid(0), scene="harbour")]) + "\n"
    with pytest.raises(SparkleDataError, match="lines 1 and 3") as e:
        join_train("location", csv_text([sid(0), sid(1)]), CSV_PATH, meta, JSONL_PATH)
    assert sid(0) in str(e.value) and JSONL_PATH in str(e.value)
    report = SkipReport()
    entries = join_train(
        "location", csv_text([sid(0), sid(1)]), CSV_PATH, meta, JSONL_PATH, errors="skip", report=report
    )
    assert [x.id for x in entries] == [sid(1)]
    assert report.ids == [sid(0)]  # reported once, not again as "missing from the metadata"


def test_jsonl_line_repeated_verbatim_is_accepted() -> None:
    meta = "\n".join([meta_line(sid(0)), meta_line(sid(0))]) + "\n"
    records = read_jsonl(meta, JSONL_PATH)
    assert list(records) == [sid(0)]
    entries = join_train("location", csv_text([sid(0)]), CSV_PATH, meta, JSONL_PATH)
    assert entries[0].scene == "rooftop"


def test_bench_jsonl_duplicates_are_reported() -> None:
    i = "Sparkle_style_010000"
    csv = f"edited_type,prompt,original_video\nstyle,p,source_videos/style/{i}.mp4\n"
    meta = "\n".join(
        json.dumps({"id": i, "metadata": {"chosen_keyword": f"art: {s}"}}) for s in ("village", "alley")
    )
    with pytest.raises(SparkleDataError, match="repeated with different content"):
        join_bench("style", csv, "style_bench.csv", meta, "style_metadata.jsonl")
    report = SkipReport()
    assert (
        join_bench(
            "style", csv, "style_bench.csv", meta, "style_metadata.jsonl", errors="skip", report=report
        )
        == []
    )
    assert report.ids == [i]
