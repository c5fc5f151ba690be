"""The official scorers' rules, against real loopback servers: reply parsing (official vs lenient), the
Azure endpoint, the retry budget, summary arithmetic, truncated results, and OpenVE-Bench end to end."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest
from bench_fixtures import (  # noqa: F401  (the *_fixture names are pytest fixtures, used by name)
    JudgeServer,
    bench_fixture,
    bench_rows,
    edit_clip,
    no_sleep,
    reply_text,
    result_path,
    results_fixture,
    server_fixture,
    write_openve_bench,
    write_results,
)

from sparkle_video.bench.judge import (
    AzureJudge,
    JudgeConfigError,
    _ask_with_retries,
    judge_results,
    read_records,
    summarize,
)
from sparkle_video.bench.openve import judge_openve, load_openve_bench, openve_average
from sparkle_video.bench.rubric import OPENVE, SPARKLE, ReplyError
from sparkle_video.bench.score import score_results
from sparkle_video.data.video import write_video

KEY = "azure-test-SECRET-9876543210"


# -- official vs lenient parsing through a real server -------------------------------------------------
def test_probe_replies_official_by_default_lenient_on_request(
    server: JudgeServer, results: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparkle_video.bench.judge import OpenAIJudge

    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    save, info = results
    ids = sorted(info)
    probes = {
        ids[0]: "**Instruction Compliance:** 4",  # official: rejected; lenient: 4
        ids[1]: "Instruction Compliance: 3.5",  # official: 3; lenient: rejected
        ids[2]: "Instruction Compliance: 4/5",  # official: rejected; lenient: 4
        ids[3]: "Instruction Compliance: 2\nInstruction Compliance: 5",  # both: the later line, 5
    }

    def script() -> dict:
        return {
            i: [("text", reply_text([4] * 6).replace("Instruction Compliance: 4", line))]
            for i, line in probes.items()
        }

    judge = OpenAIJudge("judge-x", base_url=server.url + "/v1", api_key_env="JUDGE_TEST_KEY")
    server.script = script()
    run = judge_results(
        bench_rows(info), save, judge, max_attempts=1, sleep=no_sleep, progress=False, judge_model="official"
    )
    assert sorted(dict(run.failed)) == [ids[0], ids[2]]
    got = {r["id"]: r["scores"] for f in run.record_files.values() for r in read_records(f, 6)[0].values()}
    assert got == {ids[1]: [3] * 6, ids[3]: [5, 4, 4, 4, 4, 4]}
    assert run.summary["judge_settings"]["parse"] == "official"

    server.script = script()
    run = judge_results(
        bench_rows(info),
        save,
        judge,
        max_attempts=1,
        sleep=no_sleep,
        progress=False,
        judge_model="lenient",
        parse="lenient",
    )
    assert [i for i, _ in run.failed] == [ids[1]]
    got = {r["id"]: r["scores"] for f in run.record_files.values() for r in read_records(f, 6)[0].values()}
    assert got == {ids[0]: [4] * 6, ids[2]: [4] * 6, ids[3]: [5, 4, 4, 4, 4, 4]}
    assert run.summary["judge_settings"]["parse"] == "lenient"
    with pytest.raises(JudgeConfigError, match="parse"):
        judge_results(bench_rows(info), save, judge, parse="fuzzy", progress=False)


def test_cli_refuses_to_mix_parse_modes_or_rubrics(
    server: JudgeServer, results: tuple[Path, dict], bench: tuple[Path, dict], monkeypatch, capsys, tmp_path
) -> None:
    from sparkle_video.cli import main

    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    save, _ = results
    argv = ["bench", "judge", "--bench", str(bench[0]), "--results", str(save), "--model", "judge-x"]
    argv += ["--base-url", server.url + "/v1", "--api-key-env", "JUDGE_TEST_KEY"]
    assert main(argv) == 0
    summary = json.loads((save / "judge-x_sparkle_summary.json").read_text())
    settings = summary["summary"]["judge_settings"]
    assert settings["parse"] == "official" and settings["rubric"] == "built-in"
    assert len(settings["rubric_sha256"]) == 64
    asked = len(server.requests)
    assert main([*argv, "--parse", "lenient"]) == 2
    assert "judged with" in capsys.readouterr().err
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Rate it. Editing instruction is: {edit_prompt}.")
    assert main([*argv, "--rubric", str(rubric)]) == 2
    assert len(server.requests) == asked  # refused before any request
    assert main(argv) == 0  # the same settings resume


# -- the Azure endpoint --------------------------------------------------------------------------------
def test_azure_backend_sends_deployment_path_version_and_key_header(
    server: JudgeServer, results: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    save, info = results
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_ENDPOINT", server.url)
    backend = AzureJudge("gemini-2.5-pro")
    run = judge_results(bench_rows(info)[:1], save, backend, sleep=no_sleep, progress=False)
    assert run.answered == 1
    req = server.requests[0]
    url = urlparse(req["path"])
    assert url.path == "/openai/deployments/gemini-2.5-pro/chat/completions"
    assert parse_qs(url.query) == {"api-version": ["2024-03-01-preview"]}
    assert req["headers"]["api-key"] == KEY
    body = req["body"]
    assert body["temperature"] == 0 and body["seed"] == 42 and body["model"] == "gemini-2.5-pro"
    assert [c["type"] for c in body["messages"][0]["content"]] == ["text", "image_url", "image_url"]
    assert KEY not in repr(backend)
    # overrides: endpoint and version
    other = AzureJudge("dep", base_url=server.url + "/", api_version="2025-01-01")
    other.ask("Sparkle_time_010002 rate", [b"x", b"y"])
    url = urlparse(server.requests[-1]["path"])
    assert url.path == "/openai/deployments/dep/chat/completions"
    assert parse_qs(url.query) == {"api-version": ["2025-01-01"]}
    monkeypatch.delenv("AZURE_ENDPOINT")
    with pytest.raises(JudgeConfigError, match="AZURE_ENDPOINT"):
        AzureJudge("gemini-2.5-pro")


def test_cli_azure_end_to_end_never_prints_key(
    server: JudgeServer,
    results: tuple[Path, dict],
    bench: tuple[Path, dict],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sparkle_video.cli import main

    save, info = results
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_ENDPOINT", server.url)
    caplog.set_level(logging.DEBUG)
    server.script = {sorted(info)[0]: [("500",), ("prose",)]}
    argv = ["bench", "judge", "--bench", str(bench[0]), "--results", str(save), "--backend", "azure"]
    argv += ["--model", "gemini-2.5-pro", "--backoff", "0"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert len(server.requests) == 4 + 2
    assert all(
        r["path"].startswith("/openai/deployments/gemini-2.5-pro/chat/completions") for r in server.requests
    )
    assert all(r["headers"]["api-key"] == KEY for r in server.requests)
    assert (save / "location_gemini-2.5-pro_sparkle_score.jsonl").is_file()
    everything = out.out + out.err + caplog.text + "".join(p.read_text() for p in save.glob("*.json*"))
    assert KEY not in everything


# -- retry budget ----------------------------------------------------------------------------------
class FlakyBackend:
    """Fails ``failures`` times (alternating transport error and unusable reply), then answers."""

    model = "flaky"

    def __init__(self, failures: int):
        self.failures = failures
        self.calls = 0

    def ask(self, text: str, videos: object) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            if self.calls % 2:
                raise ConnectionError("connection reset")
            return "Instruction Compliance: 9"
        return reply_text([3, 4, 4, 4, 4, 4])


@pytest.mark.parametrize("n", [1, 2, 5, 20])
def test_backend_failing_n_minus_1_times_succeeds_at_the_nth(n: int) -> None:
    waits: list[float] = []
    ok = FlakyBackend(n - 1)
    scores, _ = _ask_with_retries(ok, SPARKLE, "t", [], n, 1.0, 8.0, waits.append)
    assert scores == [3, 3, 3, 3, 3, 3] and ok.calls == n
    assert waits == [min(8.0, 2.0**k) for k in range(n - 1)]
    short = FlakyBackend(n)
    with pytest.raises(RuntimeError, match=f"gave up after {n} attempts"):
        _ask_with_retries(short, SPARKLE, "t", [], n, 1.0, 8.0, no_sleep)
    assert short.calls == n  # never more than max_attempts


def test_default_budget_is_the_official_20_attempts(results: tuple[Path, dict]) -> None:
    save, info = results
    backend = FlakyBackend(19)
    run = judge_results(bench_rows(info)[:1], save, backend, sleep=no_sleep, progress=False)
    assert run.answered == 1 and backend.calls == 20
    backend = FlakyBackend(100)
    run = judge_results(bench_rows(info)[1:2], save, backend, sleep=no_sleep, progress=False)
    assert run.answered == 0 and backend.calls == 20 and "gave up after 20" in run.failed[0][1]


# -- summary arithmetic ------------------------------------------------------------------------------
def test_macro_is_the_plain_mean_over_themes_with_unequal_counts() -> None:
    records = [{"edit_type": "location", "scores": [4, 4, 2, 4, 1, 3]}]
    records += [
        {"edit_type": "time", "scores": s}
        for s in ([1, 1, 1, 1, 1, 1], [2, 2, 2, 2, 2, 2], [3, 1, 3, 2, 3, 1])
    ]
    s = summarize(records)
    loc, tim = s["themes"]["location"], s["themes"]["time"]
    assert (loc["count"], tim["count"]) == (1, 3)
    assert [tim[k] for k in SPARKLE.short_names] == [2.0, 4 / 3, 2.0, 5 / 3, 2.0, 4 / 3]
    # official arithmetic: per dimension the mean of the two theme means; overall = mean of those six
    macro = [
        (a + b) / 2
        for a, b in zip([4.0, 4.0, 2.0, 4.0, 1.0, 3.0], [2.0, 4 / 3, 2.0, 5 / 3, 2.0, 4 / 3], strict=True)
    ]
    assert [s["macro"][k] for k in SPARKLE.short_names] == macro
    assert s["macro"]["overall"] == sum(macro) / 6
    assert s["macro"]["Ins"] == 3.0  # a mean over the 4 samples would give 2.5
    assert s["macro"]["count"] == 4
    # OpenVE-Bench: per edited type the mean of all scores, then the mean over types
    ov = [{"edit_type": "a", "scores": [5, 4, 3]}] + [{"edit_type": "b", "scores": [1, 1, 2]}] * 2
    o = summarize(ov, OPENVE)
    assert o["themes"]["a"]["overall"] == 4.0 and o["themes"]["b"]["overall"] == 8 / 6
    assert o["macro"]["overall"] == (4.0 + 8 / 6) / 2
    fig = openve_average([{**r, "edited_type": r["edit_type"]} for r in ov])
    assert fig == {"per_edited_type": {"a": 4.0, "b": 8 / 6}, "all": (4.0 + 8 / 6) / 2}


# -- truncated results -------------------------------------------------------------------------------
def test_truncated_results_are_flagged_in_judge_and_score(results: tuple[Path, dict]) -> None:
    save, info = results
    short_id = sorted(info)[1]
    d = info[short_id]
    write_video(edit_clip(d["source"], d["mask"], "lively")[:6], result_path(save, info, short_id), fps=15)
    run = judge_results(bench_rows(info), save, FlakyBackend(0), sleep=no_sleep, progress=False)
    rep = run.report()
    assert rep["counts"]["truncated"] == 1 and run.summary["truncated"] == 1
    assert rep["problems"]["truncated"] == [{"id": short_id, "source_frames": 9, "edited_frames": 6}]
    recs, _ = read_records(save / f"{d['theme']}_flaky_sparkle_score.jsonl", 6)
    assert recs[short_id]["truncated"] == {"source_frames": 9, "edited_frames": 6}
    assert all("truncated" not in r for i, r in recs.items() if i != short_id)
    scored = score_results(bench_rows(info), save, progress=False)
    flags = {r["id"]: r["truncated"] for r in scored.records}
    assert flags == {i: i == short_id for i in info}
    srep = scored.report()
    assert srep["counts"]["truncated"] == 1
    assert srep["problems"]["truncated"] == [{"id": short_id, "source_frames": 9, "edited_frames": 6}]


# -- OpenVE-Bench ------------------------------------------------------------------------------------
@pytest.fixture
def openve(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "benchmark"
    info = write_openve_bench(root, {"background_change": 3, "local_add": 1, "creative_edit": 1})
    return root, info


def test_openve_loader_filters_types_and_resolves_official_paths(openve: tuple[Path, dict]) -> None:
    root, info = openve
    rows, skipped = load_openve_bench(root / "OpenVE-Bench")
    assert skipped == [] and [r["edited_type"] for r in rows] == ["background_change"] * 3
    r = rows[0]
    assert (
        r["result_relpath"] == f"{r['id']}_edited.mp4"
        and Path(r["source_video"].source) == info[r["id"]]["path"]
    )
    everything, _ = load_openve_bench(root / "OpenVE-Bench" / "benchmark_videos.csv", None)
    assert sorted({r["edited_type"] for r in everything}) == [
        "background_change",
        "local_add",
    ]  # creative_edit off


def test_openve_infer_and_judge_reproduce_official_files(
    server: JudgeServer, openve: tuple[Path, dict], tmp_path: Path, monkeypatch, capsys
) -> None:
    from sparkle_video.cli import main

    root, info = openve
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    save = tmp_path / "openve_results"
    bench = str(root / "OpenVE-Bench")
    assert main(["bench", "infer", "--bench", bench, "--model", "identity", "--out", str(save)]) == 0
    ids = sorted(i for i, d in info.items() if d["edited_type"] == "background_change")
    assert sorted(p.name for p in save.iterdir()) == [f"{i}_edited.mp4" for i in ids]

    server.default = [4, 2, 5]
    server.script = {
        ids[0]: [("text", "Instruction Compliance: 3\n  Visual Quality & Stability: 1"), ("valid", [3, 5, 1])]
    }
    argv = ["bench", "judge", "--bench", bench, "--results", str(save), "--backend", "gemini"]
    argv += ["--model", "gemini-2.5-pro", "--base-url", server.url, "--backoff", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = (save / "openve_gemini-2.5-pro_score.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines]
    assert all(list(r) == ["scores", "prompt", "edited_type", "result"] for r in records)
    assert all("\\u00e9" in x for x in lines)  # written with json.dumps defaults, as the official file
    by_prompt = {r["prompt"]: r for r in records}
    assert by_prompt[info[ids[0]]["prompt"]]["scores"] == [3, 5, 1]  # not capped, official order
    assert by_prompt[info[ids[1]]["prompt"]]["scores"] == [4, 2, 5]
    assert by_prompt[info[ids[1]]["prompt"]]["result"] == reply_text([4, 2, 5])
    mean = (9 + 11 + 11) / 9
    assert f"official figures: all {mean:.2f}" in out
    summary = json.loads((save / "gemini-2.5-pro_openve_summary.json").read_text())["summary"]
    assert summary["openve"] == {"per_edited_type": {"background_change": mean}, "all": mean}
    # the request: both videos uploaded as files, the rubric as system instruction, nothing else
    gen = [r for r in server.requests if ":generateContent" in r["path"]]
    assert len(gen) == 4 and gen[0]["path"].endswith("/models/gemini-2.5-pro:generateContent")
    body = gen[0]["body"]
    assert "generationConfig" not in body or not {"temperature", "seed"} & set(body["generationConfig"])
    system = body["systemInstruction"]["parts"][0]["text"]
    assert info[gen[0]["id"]]["prompt"] in system and "Visual Quality & Stability" in system
    parts = [p for c in body["contents"] for p in c["parts"]]
    assert [set(p) for p in parts] == [{"fileData"}, {"fileData"}]
    uris = [p["fileData"].get("fileUri") or p["fileData"]["file_uri"] for p in parts]
    uploaded = [server.files[u.split("/v1beta/", 1)[1]] for u in uris]
    assert uploaded == [
        info[gen[0]["id"]]["path"].read_bytes(),
        (save / f"{gen[0]['id']}_edited.mp4").read_bytes(),
    ]
    # resume: nothing is asked again; the OpenAI-compatible backends are refused for OpenVE-Bench
    assert main(argv) == 0 and len([r for r in server.requests if ":generateContent" in r["path"]]) == 4
    assert main([*argv[:8], "--backend", "openai", "--model", "m"]) == 2


def test_openve_upload_polls_processing_files_and_uses_three_attempts(
    server: JudgeServer, openve: tuple[Path, dict], tmp_path: Path, monkeypatch
) -> None:
    from sparkle_video.bench.judge import GeminiJudge

    root, _ = openve
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    rows, _ = load_openve_bench(root)
    save = tmp_path / "res"
    save.mkdir()
    for r in rows:
        shutil.copy(r["source_video"].source, save / r["result_relpath"])
    server.upload_state = "PROCESSING"
    server.default = [4, 4, 4]
    server.script = {
        rows[0]["id"]: [("prose",)] * 3,
        rows[1]["id"]: [("prose",), ("prose",), ("valid", [2, 2, 2])],
    }
    waits: list[float] = []
    backend = GeminiJudge("gemini-2.5-pro", base_url=server.url, timeout=10)
    run = judge_openve(rows, save, backend, sleep=waits.append, progress=False, concurrency=1)
    assert run.answered == 2 and [i for i, _ in run.failed] == [rows[0]["id"]]
    assert "gave up after 3 attempts" in run.failed[0][1]
    assert len(server.file_gets) == 2 * len(rows)  # each upload polled once until ACTIVE
    gen = [r for r in server.requests if ":generateContent" in r["path"]]
    assert sum(r["id"] == rows[0]["id"] for r in gen) == 3 and sum(r["id"] == rows[1]["id"] for r in gen) == 3
    assert waits.count(2.0) >= 2 * len(rows)


def test_openve_parse_rule_is_unstripped_and_uncapped() -> None:
    reply = "Brief reasoning: fine.\nInstruction Compliance: 2\nVisual Quality & Stability: 5\n"
    with pytest.raises(ReplyError, match="lacks"):
        OPENVE.parse(reply + " Consistency & Detail Fidelity: 4")
    assert OPENVE.parse(reply + "Consistency & Detail Fidelity: 4.7") == [2, 5, 4]
    assert np.array_equal(OPENVE.parse(reply + "Consistency & Detail Fidelity: 4", "lenient"), [2, 5, 4])


def test_report_warns_when_result_sets_were_judged_differently(
    bench: tuple[Path, dict], tmp_path: Path
) -> None:
    from sparkle_video.bench.report import build_report

    _, info = bench
    sets = []
    for name, parse in (("a", "official"), ("b", "lenient"), ("c", "official")):
        save = tmp_path / name
        write_results(save, info, "lively", ids=sorted(info)[:1])
        judge_results(
            bench_rows(info)[:1], save, FlakyBackend(0), parse=parse, sleep=no_sleep, progress=False
        )
        run_summary = {"summary": {"judge_settings": {"parse": parse, "rubric_sha256": "0" * 64}}}
        (save / "flaky_sparkle_summary.json").write_text(json.dumps(run_summary))
        sets.append(save)
    _, md = build_report(sets[::2], tmp_path / "same.html")
    assert "Warning" not in md.read_text()
    html, md = build_report(sets, tmp_path / "mixed.html")
    text = md.read_text()
    assert text.startswith("Warning: these result sets were judged with different settings")
    assert "a: parse official" in text and "b: parse lenient" in text
    assert "judged with different settings" in html.read_text()
