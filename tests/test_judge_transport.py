"""The judge's bounded transport against misbehaving loopback servers: a wall-clock deadline per request,
a reply-size cap, ``Retry-After`` on 429/503, and 401/403/404/unknown model stopping the whole run at
the first reply, for the OpenAI-compatible, Azure and Gemini clients (OpenVE-Bench uploads included)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bench_fixtures import (  # noqa: F401  (the *_fixture names are pytest fixtures, used by name)
    bench_fixture,
    bench_rows,
    edit_clip,
    results_fixture,
    write_openve_bench,
)
from scripted_server import ScriptedServer

from sparkle_video.bench.judge import AzureJudge, GeminiJudge, OpenAIJudge, judge_results
from sparkle_video.bench.judge_http import (
    RETRY_AFTER_MAX_S,
    JudgeStopped,
    classify_failure,
    describe,
    retry_after_s,
)
from sparkle_video.bench.openve import judge_openve, load_openve_bench
from sparkle_video.data.video import write_video

KEY = "sk-transport-test-0123456789"


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("JUDGE_TEST_KEY", KEY)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    return KEY


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def make(steps: list[tuple] | None = None, **kw) -> ScriptedServer:
        servers.append(ScriptedServer(steps, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def openai_judge(server: ScriptedServer, **kw) -> OpenAIJudge:
    return OpenAIJudge("judge-x", base_url=server.url + "/v1", api_key_env="JUDGE_TEST_KEY", **kw)


# -- deadline -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["openai", "gemini"])
def test_trickled_reply_is_cut_at_the_wall_clock_deadline(scripted, key: str, kind: str) -> None:
    # one byte every 50 ms: no gap comes near the 0.6 s timeout, so only a wall-clock deadline ends it
    server = scripted([("trickle", 0.05)])
    judge = (
        openai_judge(server, timeout=0.6)
        if kind == "openai"
        else GeminiJudge("gemini-x", base_url=server.url, timeout=0.6)
    )
    start = time.monotonic()
    with pytest.raises(Exception) as err:
        judge.ask("rate Sparkle_location_010000", [b"v", b"w"])
    elapsed = time.monotonic() - start
    assert 0.55 <= elapsed < 2.0
    assert "no complete reply within the 0.6 s request deadline" in describe(err.value)
    assert classify_failure(err.value).action == "retry"  # a timeout is retried like any transport error
    assert len(server.requests) == 1


def test_deadline_failure_is_retried_then_answered(scripted, results: tuple[Path, dict], key: str) -> None:
    save, info = results
    server = scripted([("trickle", 0.05)])
    rows = bench_rows(info)[:1]
    waits: list[float] = []
    run = judge_results(
        rows, save, openai_judge(server, timeout=0.5), backoff_s=1.5, sleep=waits.append, progress=False
    )
    assert run.answered == 1 and run.failed == [] and waits == [1.5] and len(server.requests) == 2


# -- reply size -----------------------------------------------------------------------------------
@pytest.mark.parametrize("declared", [1 << 30, None])
def test_oversized_reply_is_refused_unbuffered_and_not_retried(
    scripted, results: tuple[Path, dict], key: str, declared: int | None
) -> None:
    save, info = results
    server = scripted([("huge", declared)])
    rows = bench_rows(info)[:1]
    run = judge_results(
        rows, save, openai_judge(server, max_reply_bytes=65536), sleep=lambda _: None, progress=False
    )
    assert run.answered == 0 and len(server.requests) == 1  # given up at once: no 20 big downloads
    [(sid, reason)] = run.failed
    assert sid == rows[0]["id"] and reason.startswith("gave up after 1 attempts: ")
    url = f"{server.url}/v1/chat/completions"
    if declared:
        assert reason.endswith(f"{url} sent a 1073741824-byte reply; the limit is 65536 bytes")
    else:
        assert reason.endswith(f"{url} sent a reply over the 65536-byte limit; refused")
    server.stop.set()
    assert server.bytes_sent < 16 * 1024 * 1024  # socket buffers at most, never the whole GiB


# -- Retry-After ----------------------------------------------------------------------------------
def test_retry_after_is_honoured_on_429_and_503_and_capped(
    scripted, results: tuple[Path, dict], key: str
) -> None:
    save, info = results
    server = scripted(
        [
            ("status", 429, "slow down", {"Retry-After": "7"}),
            ("status", 503, "busy", {"Retry-After": "100000"}),
            ("status", 429, "slow down", {"retry-after-ms": "250"}),
            ("status", 500, "oops", {"Retry-After": "9"}),  # not a 429/503: the usual backoff
            ("status", 429, "slow down", {}),  # no header: the usual backoff
        ]
    )
    waits: list[float] = []
    run = judge_results(
        bench_rows(info)[:1], save, openai_judge(server), backoff_s=1.0, sleep=waits.append, progress=False
    )
    assert run.answered == 1 and len(server.requests) == 6
    assert waits == [7.0, RETRY_AFTER_MAX_S, 0.25, 8.0, 16.0]


def test_retry_after_header_forms() -> None:
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412500.0) == 10.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, now=1445412600.0) == 0.0
    assert retry_after_s({"retry-after": "soon"}) is None
    assert retry_after_s({"retry-after": "-3"}) == 0.0
    assert retry_after_s({}) is None and retry_after_s(None) is None


# -- replies no retry can change ------------------------------------------------------------------
FATAL = [
    (401, "Incorrect API key provided", "unauthorized: check the API key"),
    (403, "this key may not use judge-x", "forbidden"),
    (404, "The model `judge-x` does not exist", "not found: check the model"),
    (400, "model 'judge-x' not found", "the endpoint does not know this model"),
]


@pytest.mark.parametrize("status, message, meaning", FATAL)
def test_fatal_reply_stops_the_run_after_one_request(
    scripted, results: tuple[Path, dict], key: str, status: int, message: str, meaning: str
) -> None:
    save, info = results
    server = scripted(default=("status", status, message, {}))
    with pytest.raises(JudgeStopped) as err:
        judge_results(
            bench_rows(info), save, openai_judge(server), concurrency=1, sleep=lambda _: None, progress=False
        )
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(
        f"judge endpoint {server.url}/v1/chat/completions answered HTTP {status} ({meaning}"
    )
    assert message in text and text.endswith("; stopped the run, no further requests sent")
    assert len(server.requests) == 1  # 4 samples x 20 attempts before
    assert not list(save.glob("*_score.jsonl"))


def test_fatal_reply_with_concurrency_sends_no_retries(
    scripted, results: tuple[Path, dict], key: str
) -> None:
    save, info = results
    server = scripted(default=("status", 401, "bad key", {}))
    with pytest.raises(JudgeStopped, match="HTTP 401"):
        judge_results(
            bench_rows(info), save, openai_judge(server), concurrency=4, sleep=lambda _: None, progress=False
        )
    assert 1 <= len(server.requests) <= 4  # at most the requests already in flight, none after


def test_azure_and_gemini_stop_the_same_way(scripted, results: tuple[Path, dict], key: str) -> None:
    save, info = results
    azure = scripted(default=("status", 401, "Access denied due to invalid subscription key", {}))
    backend = AzureJudge("judge-x", base_url=azure.url, api_key_env="JUDGE_TEST_KEY")
    with pytest.raises(JudgeStopped, match=r"/openai/deployments/judge-x/chat/completions answered HTTP 401"):
        judge_results(bench_rows(info), save, backend, concurrency=1, sleep=lambda _: None, progress=False)
    assert len(azure.requests) == 1
    gemini = scripted(default=("status", 403, "PERMISSION_DENIED", {}))
    with pytest.raises(JudgeStopped, match=r"models/gemini-x:generateContent answered HTTP 403 \(forbidden"):
        judge_results(
            bench_rows(info),
            save,
            GeminiJudge("gemini-x", base_url=gemini.url),
            concurrency=1,
            sleep=lambda _: None,
            progress=False,
        )
    assert len(gemini.requests) == 1


def test_openve_upload_with_a_bad_key_stops_the_run(scripted, tmp_path: Path, key: str) -> None:
    root = tmp_path / "benchmark"
    info = write_openve_bench(root, {"background_change": 3})
    save = tmp_path / "results"
    save.mkdir()
    for name, d in info.items():
        write_video(edit_clip(d["source"], d["mask"], "lively"), save / f"{name}_edited.mp4", fps=16)
    rows, _ = load_openve_bench(root / "OpenVE-Bench")
    server = scripted(default=("status", 401, "API key not valid", {}))
    with pytest.raises(JudgeStopped, match=r"/upload/v1[a-z0-9]*/files answered HTTP 401 \(unauthorized"):
        judge_openve(
            rows,
            save,
            GeminiJudge("gemini-x", base_url=server.url),
            concurrency=1,
            sleep=lambda _: None,
            progress=False,
        )
    assert len(server.requests) == 1


def test_cli_stops_with_one_line_naming_endpoint_and_status(
    scripted, results: tuple[Path, dict], bench: tuple[Path, dict], key: str, capsys
) -> None:
    from sparkle_video.cli import main

    save, _ = results
    server = scripted(default=("status", 401, "Incorrect API key provided", {}))
    argv = ["bench", "judge", "--bench", str(bench[0]), "--results", str(save), "--model", "judge-x"]
    argv += ["--base-url", server.url + "/v1", "--api-key-env", "JUDGE_TEST_KEY", "--concurrency", "1"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: judge endpoint {server.url}/v1/chat/completions answered HTTP 401 (")
    assert "Traceback" not in "\n".join(err)
    assert len(server.requests) == 1
