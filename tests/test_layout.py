"""The official layout: path builders, keyword parsing and the repo-relative path guard."""

from __future__ import annotations

import pytest

from sparkle_video.data.layout import (
    bench_result_path,
    judge_result_name,
    parse_chosen_keyword,
    safe_relpath,
)

SID = "Sparkle_location_000007"


def test_result_names_follow_the_official_scripts() -> None:
    assert bench_result_path("location", "urban", "rooftop over skyline", SID) == (
        f"location/urban---rooftop_over_skyline/{SID}_edited.mp4"
    )
    assert judge_result_name("time", "gpt-4o") == "time_gpt-4o_sparkle_score.jsonl"  # the default protocol
    assert judge_result_name("time", "gpt-4o", protocol="openve") == "time_gpt-4o_openve_score.jsonl"


def test_chosen_keyword_splits_once_and_strips() -> None:
    kw = parse_chosen_keyword("urban: rooftop overlooking skyline")
    assert kw is not None and (kw.subtheme, kw.scene) == ("urban", "rooftop overlooking skyline")
    assert kw.scene_key == "rooftop_overlooking_skyline"
    kw = parse_chosen_keyword(" art :  noir: rainy alley ")  # only the first ": " separates
    assert kw is not None and (kw.subtheme, kw.scene) == ("art", "noir: rainy alley")
    assert parse_chosen_keyword(None) is None and parse_chosen_keyword("") is None
    with pytest.raises(ValueError, match="must look like 'subtheme: scene', got 'urban-rooftop'"):
        parse_chosen_keyword("urban-rooftop")


@pytest.mark.parametrize("path", ["", "   ", None])
def test_safe_relpath_rejects_empty_paths(path: str | None) -> None:
    with pytest.raises(ValueError, match="empty path"):
        safe_relpath(path)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "C:/x.mp4", "c:\\x.mp4", "s3://bucket/x.mp4", "hf://datasets/a/b/x.mp4"]
)
def test_safe_relpath_rejects_absolute_paths(path: str) -> None:
    with pytest.raises(ValueError, match="absolute path not allowed"):
        safe_relpath(path)
