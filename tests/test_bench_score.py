"""Scoring result sets with the judge-free metrics, correlation with a judge, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bench_fixtures import bench_rows, edit_clip, result_path, write_bench, write_results

from sparkle_video.bench.editors import IdentityEditor, StaticBackgroundEditor
from sparkle_video.bench.judge import judge_file_name
from sparkle_video.bench.report import bar_chart_svg, build_report, collect, leaderboard_markdown, paper_rows
from sparkle_video.bench.runner import run_inference
from sparkle_video.bench.score import (
    METRICS_FILE,
    judge_correlation,
    read_metric_records,
    score_results,
    summarize_metrics,
)
from sparkle_video.data.masks import save_mask
from sparkle_video.data.video import write_video
from sparkle_video.errors import SparkleDataError


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("bench")
    return root, write_bench(root, {"location": 2, "season": 2}, frames=9)


@pytest.fixture(scope="module")
def result_sets(bench: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    _, info = bench
    base = tmp_path_factory.mktemp("results")
    sets = {"identity": base / "identity", "static": base / "static", "lively": base / "lively"}
    run_inference(bench_rows(info), IdentityEditor(), sets["identity"], progress=False)
    run_inference(bench_rows(info), StaticBackgroundEditor(), sets["static"], progress=False)
    write_results(sets["lively"], info, "lively")
    return sets


@pytest.fixture(scope="module")
def scored(bench: tuple[Path, dict], result_sets: dict[str, Path]) -> dict[str, object]:
    _, info = bench
    return {name: score_results(bench_rows(info), path, progress=False) for name, path in result_sets.items()}


def test_baselines_are_floors_on_background_dynamics(scored: dict) -> None:
    lively = scored["lively"].summary["macro"]["background_dynamics"]
    for floor in ("identity", "static"):
        macro = scored[floor].summary["macro"]
        assert macro["background_dynamics"] < 0.3 < 0.9 < lively
        for theme in ("location", "season"):
            assert scored[floor].summary["themes"][theme]["background_dynamics"] < (
                scored["lively"].summary["themes"][theme]["background_dynamics"] - 0.5
            )
    assert scored["identity"].summary["macro"]["foreground_integrity"] > 0.95


def test_aggregates_records_and_resume(scored: dict, bench: tuple[Path, dict], result_sets: dict) -> None:
    _, info = bench
    run = scored["lively"]
    assert run.computed == 4 and run.failed == [] and run.summary["macro"]["count"] == 4
    loc = [r for r in run.records if r["edit_type"] == "location"]
    assert run.summary["themes"]["location"]["temporal_stability"] == pytest.approx(
        np.mean([r["temporal_stability"] for r in loc])
    )
    themes = run.summary["themes"]
    assert run.summary["macro"]["foreground_integrity"] == pytest.approx(
        (themes["location"]["foreground_integrity"] + themes["season"]["foreground_integrity"]) / 2
    )
    lines = (result_sets["lively"] / METRICS_FILE).read_text().splitlines()
    assert sorted(json.loads(x)["id"] for x in lines) == sorted(info)
    again = score_results(bench_rows(info), result_sets["lively"], progress=False)
    assert again.computed == 0 and again.reused == 4 and again.summary == run.summary


def test_bad_results_are_counted_and_named(bench: tuple[Path, dict], tmp_path: Path) -> None:
    _, info = bench
    ids = sorted(info)
    write_results(tmp_path, info, "lively", ids=ids[:3])
    result_path(tmp_path, info, ids[1]).write_bytes(b"garbage, not an mp4")
    run = score_results(bench_rows(info), tmp_path, progress=False)
    rep = run.report()
    assert rep["problems"]["missing_edited"] == [ids[3]]
    assert [f["id"] for f in rep["problems"]["failed"]] == [ids[1]]
    assert "not a readable video" in rep["problems"]["failed"][0]["reason"]
    assert rep["counts"]["computed"] == 2 and rep["summary"]["macro"]["count"] == 2
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / f"{ids[0]}_edited.mp4").write_bytes(b"x")
    with pytest.raises(SparkleDataError, match="official layout"):
        score_results(bench_rows(info), flat, progress=False)


def test_rank_correlation_with_judge(bench: tuple[Path, dict], tmp_path: Path) -> None:
    _, info = bench
    ids = sorted(info)
    judge_bgdy = {}
    for k, sid in enumerate(ids):  # background speed 0, 1, 2, 4 px/frame: judge agrees on the order
        d = info[sid]
        write_video(
            edit_clip(d["source"], d["mask"], "lively", speed=[0, 1, 2, 4][k]),
            result_path(tmp_path, info, sid),
        )
        judge_bgdy[sid] = k + 1
    for theme in ("location", "season"):
        with open(tmp_path / judge_file_name(theme, "judge-x", "sparkle"), "w") as f:
            for sid in ids:
                if info[sid]["theme"] == theme:
                    rec = {
                        "id": sid,
                        "edit_type": theme,
                        "scores": [5, 4, 4, 4, judge_bgdy[sid], 4],
                        "result": "",
                    }
                    f.write(json.dumps(rec) + "\n")
    run = score_results(bench_rows(info), tmp_path, progress=False)
    corr = run.correlation["judge-x"]
    assert corr["background_dynamics"] == {"judge_dimension": "Background Dynamics", "spearman": 1.0, "n": 4}
    assert corr["foreground_integrity"]["spearman"] is None  # the judge gave every sample the same score
    assert judge_correlation(run.records, [], "sparkle")["background_dynamics"]["n"] == 0


def test_bait_masks_from_a_folder(bench: tuple[Path, dict], tmp_path: Path) -> None:
    _, info = bench
    write_results(tmp_path / "res", info, "lively")
    for sid, d in info.items():
        (tmp_path / "masks" / d["theme"]).mkdir(parents=True, exist_ok=True)
        save_mask(d["mask"], tmp_path / "masks" / d["theme"] / f"{sid}.npz")
    run = score_results(bench_rows(info), tmp_path / "res", masks_dir=tmp_path / "masks", progress=False)
    assert {r["mask"] for r in run.records} == {"bait"}
    sid = sorted(info)[0]
    rec = next(r for r in run.records if r["id"] == sid)
    assert rec["foreground_fraction"] == pytest.approx(info[sid]["mask"].mean(), abs=1e-6)


def test_summarize_metrics_skips_missing_values() -> None:
    s = summarize_metrics(
        [
            {"edit_type": "time", "background_dynamics": 0.2, "foreground_integrity": None},
            {"edit_type": "time", "background_dynamics": 0.4, "foreground_integrity": 0.5},
            {"edit_type": "style", "background_dynamics": 1.0, "foreground_integrity": 0.9},
        ]
    )
    assert s["themes"]["time"]["background_dynamics"] == pytest.approx(0.3)
    assert s["themes"]["time"]["foreground_integrity"] == pytest.approx(0.5)
    assert s["macro"]["background_dynamics"] == pytest.approx(0.65) and s["macro"]["count"] == 3
    assert s["themes"]["time"]["temporal_stability"] is None


def test_report_html_and_markdown(
    bench: tuple[Path, dict], result_sets: dict, scored: dict, tmp_path: Path
) -> None:
    _, info = bench
    ids = sorted(info)
    lively = result_sets["lively"]
    with open(lively / judge_file_name("location", "judge-x", "sparkle"), "w") as f:
        for sid in ids[:2]:
            f.write(json.dumps({"id": sid, "edit_type": "location", "scores": [4, 4, 3, 3, 4, 4]}) + "\n")
    html_path, md_path = build_report(
        [result_sets["static"], lively],
        tmp_path / "report.html",
        names=["Static <baseline>", "Lively"],
        bench_rows=bench_rows(info),
        max_samples=3,
    )
    html = html_path.read_text()
    assert "Static &lt;baseline&gt;" in html and "<baseline>" not in html
    assert html.count("<svg") == 6  # judge overall + judge BgDy + four metrics
    assert html.count("data:image/jpeg;base64,") == 3 * 3  # source + two results for three samples
    assert "Ins:4 Vis:4 FgIn:3" in html
    md = md_path.read_text().splitlines()
    assert md[0].startswith("| Result | Overall | Ins | Vis | FgIn | FgMo | BgDy | BgVi | BgDyn |")
    assert md[2].startswith("| Lively | 3.67 | 4.00 |")  # judged result set ranks first
    assert md[3].startswith("| Static <baseline> | – |")
    summary = collect(lively)
    assert summary.judge_model == "judge-x" and len(summary.edited_paths) == 4
    assert leaderboard_markdown([summary]).count("\n") == 3


def test_report_with_the_papers_rows(bench: tuple[Path, dict], result_sets: dict, tmp_path: Path) -> None:
    _, info = bench
    lively = result_sets["lively"]
    with open(lively / judge_file_name("location", "judge-x", "sparkle"), "w") as f:
        for sid in sorted(info)[:2]:
            f.write(json.dumps({"id": sid, "edit_type": "location", "scores": [4, 4, 3, 3, 4, 4]}) + "\n")
    html_path, md_path = build_report([lively], tmp_path / "r.html", names=["Mine"], paper=True)
    md = md_path.read_text().splitlines()
    names = [line.split(" | ")[0].lstrip("| ") for line in md[2:]]
    # sorted in by overall: Kiwi-Sparkle 3.81 > Mine 3.67 > Lucy-Edit-1.1 2.74 > Kiwi-Edit 2.54
    assert names == ["Kiwi-Sparkle (paper)", "Mine", "Lucy-Edit-1.1 (paper)", "Kiwi-Edit (paper)"]
    assert md[2].startswith("| Kiwi-Sparkle (paper) | 3.81 | 4.10 | 3.40 | 3.77 | 4.05 | 3.54 | 3.99 | – |")
    assert md[2].endswith("| – | – |")  # published rows have no counts of ours
    assert "Lucy-Edit-1.1 (paper)" in html_path.read_text()
    _, md_default = build_report([lively], tmp_path / "d.html", names=["Mine"])
    assert "(paper)" not in md_default.read_text()
    openve = {r["name"]: r for r in paper_rows("openve")}
    # published as overall / Ins / Cons / VQ
    assert (openve["UniVideo (13B) (paper)"]["overall"], openve["UniVideo (13B) (paper)"]["Ins"]) == (
        2.74,
        3.12,
    )
    assert (openve["Kiwi-Sparkle (paper)"]["Cons"], openve["Kiwi-Sparkle (paper)"]["VQ"]) == (3.15, 3.22)


def test_bar_chart_svg_scales_bars() -> None:
    svg = bar_chart_svg("t", ["a", "b"], {"x": [0.5, None], "y": [1.0, 0.25]}, vmax=1.0, height=228)
    assert svg.startswith("<svg") and svg.count("<rect") == 3
    assert 'height="88.0"' in svg and 'height="176.0"' in svg and 'height="44.0"' in svg


def test_cli_score_and_report(
    bench: tuple[Path, dict], result_sets: dict, scored: dict, tmp_path: Path, capsys
) -> None:
    from sparkle_video.cli import main

    root, _ = bench
    out_json = tmp_path / "score.json"
    assert main(["bench", "score", "--bench", str(root), "--results", str(result_sets["static"]),
                 "--json", str(out_json)]) == 0  # fmt: skip
    rep = json.loads(out_json.read_text())
    assert rep["counts"]["found"] == 4 and rep["counts"]["bench_skipped"] == 0
    assert "macro" in capsys.readouterr().out
    out = tmp_path / "r" / "report.html"
    assert (
        main(["bench", "report", str(result_sets["static"]), str(result_sets["identity"]), "--out", str(out)])
        == 0
    )
    assert out.is_file() and (tmp_path / "r" / "report.md").is_file()
    assert "| static |" in capsys.readouterr().out


def test_metric_records_survive_a_line_cut_inside_a_character(tmp_path: Path) -> None:
    good = {"id": "a", "prompt": "neige — nuit", "background_dynamics": 0.5}
    cut = json.dumps({"id": "b", "prompt": "café — soir"}, ensure_ascii=False).encode()
    cut = cut[: cut.index("—".encode()) + 1]  # a crash stopped the write inside the dash
    path = tmp_path / METRICS_FILE
    path.write_bytes(json.dumps(good, ensure_ascii=False).encode() + b"\n" + cut)
    assert read_metric_records(path) == {"a": good}  # "b" is simply scored again
