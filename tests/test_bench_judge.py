"""The VLM judge against a real loopback HTTP server: records, caps, retries, resume, summary, bad input."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest
from bench_fixtures import (  # noqa: F401  (the *_fixture names are pytest fixtures, used by name)
    JudgeServer,
    bench_fixture,
    bench_rows,
    no_sleep,
    reply_text,
    result_path,
    results_fixture,
    server_fixture,
)

from sparkle_video.bench.judge import (
    GeminiJudge,
    JudgeConfigError,
    OpenAIJudge,
    judge_results,
    load_judge_records,
    read_records,
    summarize,
)
from sparkle_video.bench.rubric import OPENVE, SPARKLE, ReplyError, apply_cap, parse_scores
from sparkle_video.errors import SparkleDataError

KEY = "sk-test-SECRET-0123456789"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    return KEY


def judge(server: JudgeServer, **kw) -> OpenAIJudge:
    return OpenAIJudge("judge-x", base_url=server.url + "/v1", api_key_env="JUDGE_TEST_KEY", **kw)


# -- rubric ------------------------------------------------------------------------------------------
def test_lenient_parse_accepts_common_reply_shapes() -> None:
    reply = (
        "Brief reasoning: ok.\n**Instruction Compliance**: 4\n- Overall Visual Quality: 5/5\n"
        "3. Foreground Integrity: 3\nForeground Motion Consistency : 2.0\n"
        "Background Dynamics (Liveness): 5\nbackground visual quality: 1\n"
    )
    assert parse_scores(reply, SPARKLE.dimensions) == [4, 5, 3, 2, 5, 1]
    assert SPARKLE.parse(reply, "lenient") == [4, 4, 3, 2, 4, 1]  # capped at Instruction Compliance
    with pytest.raises(ReplyError):
        SPARKLE.parse(reply)  # none of those lines is in the official format
    assert apply_cap([2, 5, 1]) == [2, 2, 1]
    # OpenVE-Bench: stored order [IC, VQ&S, C&DF], no cap in code
    assert OPENVE.parse(reply_text([3, 5, 2])) == [3, 5, 2]
    with pytest.raises(ValueError, match="parse mode"):
        SPARKLE.parse(reply_text([4] * 6), "fuzzy")


#: Probe replies: the Instruction Compliance line of an otherwise official reply (other scores 4) is
#: replaced; expected Instruction Compliance under the official rule and the lenient one (None: rejected).
PROBES = [
    ("**Instruction Compliance:** 4", None, 4),
    ("- Instruction Compliance: 4", None, 4),
    ("instruction compliance: 4", None, 4),
    ("Instruction Compliance: 4/5", None, 4),
    ("Instruction Compliance: 4 (good)", None, 4),
    ("Instruction Compliance = 4", None, 4),
    ("Instruction Compliance\uff1a 4", None, 4),  # full-width colon
    ("Instruction Compliance:\n4", None, 4),  # score on the next line
    ("Instruction Compliance: 3.5", 3, None),
    ("Instruction Compliance: 4.9", 4, None),
    ("   Instruction Compliance: 2  ", 2, 2),  # surrounding blanks are stripped
    ("Instruction Compliance: 2\nInstruction Compliance: 5", 5, 5),  # the later line wins
    ("Instruction Compliance: 5\nInstruction Compliance: 0", None, None),  # any out-of-range rejects
    ("Instruction Compliance: 0.5", None, None),
]


def probe_reply(line: str) -> str:
    return reply_text([4] * 6).replace("Instruction Compliance: 4", line)


@pytest.mark.parametrize("line, official, lenient", PROBES)
def test_official_parse_rule(line: str, official: int | None, lenient: int | None) -> None:
    for mode, expected in (("official", official), ("lenient", lenient)):
        if expected is None:
            with pytest.raises(ReplyError):
                SPARKLE.parse(probe_reply(line), mode)
        else:
            assert SPARKLE.parse(probe_reply(line), mode) == [expected] + [min(4, expected)] * 5


def test_official_parse_reads_after_last_colon_and_needs_every_dimension() -> None:
    assert SPARKLE.parse(probe_reply("Instruction Compliance: note: 3")) == [3] * 6
    with pytest.raises(ReplyError, match="lacks"):
        SPARKLE.parse(reply_text([4] * 6).replace("Background Dynamics: 4\n", ""))
    # OpenVE-Bench's rule does not strip lines: an indented line does not count
    openve = reply_text([4, 4, 4]).replace("Instruction Compliance", "  Instruction Compliance")
    with pytest.raises(ReplyError, match="lacks"):
        OPENVE.parse(openve)
    assert (
        SPARKLE.parse(
            openve.replace("Visual Quality & Stability: 4\nConsistency & Detail Fidelity: 4", "")
            + "\n"
            + "\n".join(f"{d}: 4" for d in SPARKLE.dimensions[1:])
        )
        == [4] * 6
    )


def test_reply_stating_a_dimension_twice_uses_the_later_value() -> None:
    reply = reply_text([5, 5, 5, 5, 5, 5]) + "\nBackground Dynamics: 2\nForeground Integrity: 3"
    assert SPARKLE.parse(reply) == [5, 5, 3, 5, 2, 5]
    early = "Background Dynamics: 2\n" + reply_text([5, 5, 5, 5, 5, 5])
    assert SPARKLE.parse(early) == [5] * 6
    assert OPENVE.parse(reply_text([2, 3, 4]) + "\nInstruction Compliance: 5") == [5, 3, 4]


@pytest.mark.parametrize(
    "reply, message",
    [
        ("The edit is lovely.", "lacks scores"),
        (reply_text([6, 4, 4, 4, 4, 4]), "outside 1-5"),
        (
            reply_text([4, 4, 4, 4, 4, 4]).replace("Background Dynamics: 4", "Background Dynamics: 0"),
            "outside",
        ),
        ("", "empty"),
    ],
)
@pytest.mark.parametrize("mode", ["official", "lenient"])
def test_parse_scores_rejects_bad_replies(reply: str, message: str, mode: str) -> None:
    with pytest.raises(ReplyError, match=message):
        SPARKLE.parse(reply, mode)
    if mode == "lenient":
        with pytest.raises(ReplyError, match="not an integer"):
            SPARKLE.parse(probe_reply("Instruction Compliance: 3.5"), mode)


def test_prompt_fills_official_placeholder_or_appends() -> None:
    assert SPARKLE.build_prompt("make it snow", "Rate it. Editing instruction is: {edit_prompt}.") == (
        "Rate it. Editing instruction is: make it snow."
    )
    custom = SPARKLE.build_prompt("make it snow", "Rate it.")
    assert custom.endswith("Editing instruction: make it snow\n")
    own = SPARKLE.build_prompt("make it snow")
    assert "make it snow" in own and all(d in own for d in SPARKLE.dimensions) and "{" not in own


# -- a run against the server ------------------------------------------------------------------------
def test_records_caps_files_and_summary(server: JudgeServer, results: tuple[Path, dict], key: str) -> None:
    save, info = results
    ids = sorted(info)
    server.script = {
        ids[0]: [("valid", [3, 5, 4, 2, 5, 1])],
        ids[1]: [("valid", [5, 5, 5, 5, 5, 5])],
        ids[2]: [("valid", [2, 4, 4, 4, 4, 4])],
        ids[3]: [("valid", [4, 3, 3, 3, 3, 3])],
    }
    run = judge_results(bench_rows(info), save, judge(server), concurrency=3, sleep=no_sleep, progress=False)
    assert run.answered == 4 and not run.failed
    loc = save / "location_judge-x_sparkle_score.jsonl"
    tim = save / "time_judge-x_sparkle_score.jsonl"
    assert set(run.record_files.values()) == {loc, tim}
    recs, bad = read_records(loc, 6)
    assert bad == 0 and set(recs) == {ids[0], ids[1]}
    r0 = recs[ids[0]]
    assert r0["scores"] == [3, 3, 3, 2, 3, 1]  # capped
    assert set(r0) == {"id", "prompt", "edit_type", "subtheme", "scene", "scores", "result"}
    assert r0["edit_type"] == "location" and r0["prompt"] == info[ids[0]]["prompt"]
    assert r0["subtheme"] == info[ids[0]]["subtheme"] and r0["scene"] == info[ids[0]]["scene"]
    assert r0["result"].startswith("Brief reasoning")
    s = run.summary
    assert s["themes"]["location"]["Ins"] == pytest.approx(4.0)
    assert s["themes"]["location"]["overall"] == pytest.approx((sum([3, 3, 3, 2, 3, 1]) + 30) / 12)
    assert s["themes"]["time"]["BgDy"] == pytest.approx((2 + 3) / 2)
    assert s["macro"]["Ins"] == pytest.approx((4.0 + 3.0) / 2)
    assert s["macro"]["count"] == 4
    # request shape: official settings, key only in the Authorization header
    req = server.requests[0]
    assert req["body"]["temperature"] == 0 and req["body"]["seed"] == 42
    assert req["headers"]["authorization"] == f"Bearer {KEY}"
    content = req["body"]["messages"][0]["content"]
    assert content[0]["type"] == "text" and [c["type"] for c in content[1:]] == ["image_url", "image_url"]
    sid = req["id"]
    edited = base64.b64decode(content[2]["image_url"]["url"].split(",", 1)[1])
    assert content[2]["image_url"]["url"].startswith("data:video/mp4;base64,")
    assert edited == result_path(save, info, sid).read_bytes()


def test_retries_on_prose_out_of_range_500_and_timeout(
    server: JudgeServer, results: tuple[Path, dict], key: str
) -> None:
    save, info = results
    ids = sorted(info)
    server.script = {
        ids[0]: [("prose",), ("valid", [4, 4, 4, 4, 4, 4])],
        ids[1]: [("range",), ("valid", [4, 4, 4, 4, 4, 4])],
        ids[2]: [("500",), ("valid", [4, 4, 4, 4, 4, 4])],
        ids[3]: [("slow",), ("valid", [4, 4, 4, 4, 4, 4])],
    }
    waits: list[float] = []
    run = judge_results(
        bench_rows(info),
        save,
        judge(server, timeout=0.5),
        concurrency=4,
        backoff_s=1.5,
        sleep=waits.append,
        progress=False,
    )
    assert run.answered == 4 and run.failed == []
    assert [server.count(i) for i in ids] == [2, 2, 2, 2]
    assert waits == [1.5] * 4  # one backoff per sample, first step of the exponential schedule


def test_gives_up_names_failures_and_resumes(
    server: JudgeServer, results: tuple[Path, dict], key: str
) -> None:
    save, info = results
    ids = sorted(info)
    server.script = {ids[0]: [("500",)] * 3, ids[1]: [("prose",)] * 3}
    waits: list[float] = []
    run = judge_results(
        bench_rows(info),
        save,
        judge(server),
        max_attempts=3,
        backoff_s=1.0,
        sleep=waits.append,
        progress=False,
    )
    assert run.answered == 2
    failed = dict(run.failed)
    assert set(failed) == {ids[0], ids[1]}
    assert "InternalServerError" in failed[ids[0]] and "unusable reply" in failed[ids[1]]
    assert sorted(waits) == [1.0, 1.0, 2.0, 2.0]  # exponential backoff, no wait after the last attempt
    assert run.report()["counts"]["failed"] == 2
    # a crash mid-write leaves a cut line: that id is re-asked, the finished ones are not
    tim = save / "time_judge-x_sparkle_score.jsonl"
    lines = tim.read_text().splitlines()
    assert len(lines) == 2
    tim.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    first_done = json.loads(lines[0])["id"]
    before = {i: server.count(i) for i in ids}
    run2 = judge_results(bench_rows(info), save, judge(server), sleep=no_sleep, progress=False)
    asked_again = {i for i in ids if server.count(i) > before[i]}
    assert asked_again == {ids[0], ids[1], ({ids[2], ids[3]} - {first_done}).pop()}
    assert run2.reused == 1 and run2.answered == 3 and run2.corrupt_lines == 1
    assert run2.summary["macro"]["count"] == 4
    records = load_judge_records(save)["judge-x"]
    assert sorted(r["id"] for r in records) == ids
    assert run2.summary == {
        **summarize(records),
        "judge_settings": run.summary["judge_settings"],
        "truncated": 0,
    }


def test_missing_key_fails_before_any_request(server: JudgeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUDGE_TEST_KEY", raising=False)
    with pytest.raises(JudgeConfigError, match="JUDGE_TEST_KEY"):
        judge(server)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(JudgeConfigError, match="GEMINI_API_KEY or GOOGLE_API_KEY"):
        GeminiJudge("gemini-2.5-pro")
    assert server.requests == []


def test_missing_corrupt_and_unexpected_results_are_counted(
    server: JudgeServer, results: tuple[Path, dict], key: str
) -> None:
    save, info = results
    ids = sorted(info)
    result_path(save, info, ids[0]).unlink()
    result_path(save, info, ids[1]).write_bytes(b"not a video at all")
    cut = result_path(save, info, ids[2])
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a writer killed half-way
    stray = save / "location" / "urban---somewhere_else" / "Sparkle_location_099999_edited.mp4"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x")
    rows = bench_rows(info)
    rows.append({**rows[0], "id": "Sparkle_location_012345", "subtheme": None, "scene": None})
    run = judge_results(rows, save, judge(server), sleep=no_sleep, progress=False)
    rep = run.report()
    assert rep["counts"]["missing_edited"] == 1 and rep["problems"]["missing_edited"] == [ids[0]]
    unreadable = {p["id"]: p["reason"] for p in rep["problems"]["unreadable_edited"]}
    assert rep["counts"]["unreadable_edited"] == 2 and set(unreadable) == {ids[1], ids[2]}
    assert "not an MP4" in unreadable[ids[1]] and "truncated" in unreadable[ids[2]]
    assert rep["problems"]["unexpected"] == [
        "location/urban---somewhere_else/Sparkle_location_099999_edited.mp4"
    ]
    assert rep["problems"]["missing_metadata"] == ["Sparkle_location_012345"]
    assert run.answered == 1 and server.count(ids[1]) == server.count(ids[2]) == 0


def test_wrong_layout_is_an_error_before_work(
    server: JudgeServer, tmp_path: Path, bench: tuple[Path, dict], key: str
) -> None:
    _, info = bench
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in info:
        (flat / f"{i}_edited.mp4").write_bytes(b"x")
    with pytest.raises(SparkleDataError, match="official layout"):
        judge_results(bench_rows(info), flat, judge(server), progress=False)
    with pytest.raises(SparkleDataError, match="does not exist"):
        judge_results(bench_rows(info), tmp_path / "nowhere", judge(server), progress=False)
    assert server.requests == []


def test_openve_protocol_three_dims(server: JudgeServer, results: tuple[Path, dict], key: str) -> None:
    save, info = results
    server.default = [2, 5, 1]
    run = judge_results(
        bench_rows(info), save, judge(server), protocol="openve", sleep=no_sleep, progress=False
    )
    recs, _ = read_records(save / "location_judge-x_openve_score.jsonl", 3)
    assert {tuple(r["scores"]) for r in recs.values()} == {(2, 5, 1)}  # no cap in code
    assert run.summary["macro"] == pytest.approx({"Ins": 2, "VQ": 5, "Cons": 1, "overall": 8 / 3, "count": 4})
    text = server.requests[0]["body"]["messages"][0]["content"][0]["text"]
    assert "Consistency & Detail Fidelity" in text and "Background Dynamics" not in text


def test_frames_media_and_custom_rubric(server: JudgeServer, results: tuple[Path, dict], key: str) -> None:
    save, info = results
    rows = [r for r in bench_rows(info) if r["theme"] == "time"][:1]
    run = judge_results(
        rows,
        save,
        judge(server, media="frames", num_frames=3),
        rubric="Score: {edit_prompt}",
        sleep=no_sleep,
        progress=False,
    )
    assert run.answered == 1
    content = server.requests[0]["body"]["messages"][0]["content"]
    assert content[0]["text"] == f"Score: {rows[0]['prompt']}"
    urls = [c["image_url"]["url"] for c in content if c["type"] == "image_url"]
    assert len(urls) == 6 and all(u.startswith("data:image/jpeg;base64,/9j/") for u in urls)


def test_gemini_backend_on_loopback(server: JudgeServer, results: tuple[Path, dict], monkeypatch) -> None:
    save, info = results
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    rows = bench_rows(info)[:2]
    backend = GeminiJudge("gemini-2.5-pro", base_url=server.url, timeout=10)
    run = judge_results(rows, save, backend, sleep=no_sleep, progress=False)
    assert run.answered == 2 and run.failed == []
    req = server.requests[0]
    assert req["path"].endswith("models/gemini-2.5-pro:generateContent")
    parts = req["body"]["contents"][0]["parts"]
    inline = [p["inlineData"] for p in parts if "inlineData" in p]
    assert [d["mime_type"] for d in inline] == ["video/mp4", "video/mp4"]
    assert base64.urlsafe_b64decode(inline[1]["data"]) == result_path(save, info, req["id"]).read_bytes()
    assert (
        req["body"]["generationConfig"]["temperature"] == 0 and req["body"]["generationConfig"]["seed"] == 42
    )
    assert (save / "location_gemini-2.5-pro_sparkle_score.jsonl").is_file()


def test_cli_judge_end_to_end_never_shows_key(
    server: JudgeServer,
    results: tuple[Path, dict],
    bench: tuple[Path, dict],
    key: str,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sparkle_video.cli import main

    save, info = results
    out_json = save.parent / "judge.json"
    caplog.set_level(logging.DEBUG)
    argv = ["bench", "judge", "--bench", str(bench[0]), "--results", str(save), "--model", "judge-x"]
    argv += ["--base-url", server.url + "/v1", "--api-key-env", "JUDGE_TEST_KEY"]
    argv += ["--json", str(out_json), "--backoff", "0", "--max-attempts", "4"]
    server.script = {sorted(info)[0]: [("500",)] * 4}
    assert main(argv) == 1  # one sample failed after every retry: reported, the rest kept
    captured = capsys.readouterr()
    assert "macro" in captured.out and "not scored" in captured.out
    report = json.loads(out_json.read_text())
    assert report["counts"]["answered"] == 3 and report["counts"]["failed"] == 1
    assert (save / "judge-x_sparkle_summary.json").is_file()
    assert main(argv) == 0  # resume: only the failed one is asked again
    assert len(server.requests) == 3 + 4 + 1
    everything = captured.out + captured.err + capsys.readouterr().out + caplog.text + out_json.read_text()
    assert KEY not in everything
    assert all(KEY not in p.read_text() for p in save.glob("*.json*"))


def test_cli_judge_missing_key_is_clear(
    bench: tuple[Path, dict], tmp_path: Path, monkeypatch, capsys
) -> None:
    from sparkle_video.cli import main

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert main(["bench", "judge", "--bench", str(bench[0]), "--results", str(tmp_path), "--model", "m"]) == 2
    assert "set the environment variable OPENAI_API_KEY" in capsys.readouterr().err
