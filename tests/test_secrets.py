"""The API key never leaves the process: a loopback judge echoes the request's credentials in 400 and 500
bodies and in a "successful" reply, and no output, log line, record, summary or report holds the key in
any of its forms."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from bench_fixtures import (  # noqa: F401  (the *_fixture names are pytest fixtures, used by name)
    bench_fixture,
    results_fixture,
)
from scripted_server import ScriptedServer

from sparkle_video.errors import (
    REDACTED,
    RedactingFilter,
    SparkleDataError,
    SparkleHubError,
    redact,
    register_secret,
)

#: A unique marker, with characters that URL-quoting, JSON and base64 each change.
KEY = "sk-MARKER-5e1f/+q=Zx81-d4c2"
FORMS = [KEY, quote(KEY, safe=""), quote_plus(KEY), base64.b64encode(KEY.encode()).decode().rstrip("=")]

#: Sample 1: an echoing 400, then an echoing success; sample 2: echoing 500s until it is given up;
#: sample 3: an echoing success; sample 4: a plain one.
STEPS = [
    ("echo", 400),
    ("echo_valid", [4] * 6),
    ("echo", 500),
    ("echo", 500),
    ("echo", 500),
    ("echo_valid", [3] * 6),
]


def leaks(text: str) -> list[str]:
    return [f for f in FORMS if f in text]


def written(folder: Path) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".mp4"
    )


def test_redact_removes_every_form_of_a_registered_key() -> None:
    register_secret(KEY)
    text = f"Bearer {KEY} ?key={quote(KEY, safe='')}&k={quote_plus(KEY)} {json.dumps(KEY)} {FORMS[3]}"
    assert leaks(redact(text)) == [] and redact(text).count(REDACTED) == 5
    assert redact("nothing secret here") == "nothing secret here"
    register_secret("short")  # too short to be a key: never registered (it would mangle ordinary text)
    assert redact("a short note") == "a short note"
    assert redact("other-secret-value!", secrets=["other-secret-value"]) == f"{REDACTED}!"
    # our own errors are redacted as they are made
    assert leaks(str(SparkleHubError(f"echo {KEY}", repo_id="o/r"))) == []
    assert leaks(SparkleDataError(f"bad {KEY}", path="/x").reason) == []
    # and so is any log record passing a handler with the filter, its arguments and traceback included
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "sent %s", (f"Bearer {KEY}",), None)
    try:
        raise ValueError(KEY)
    except ValueError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter().filter(record)
    assert leaks(record.getMessage()) == [] and leaks(record.exc_text or "") == []


def _argv(bench: Path, save: Path, server: ScriptedServer) -> list[str]:
    argv = ["bench", "judge", "--bench", str(bench), "--results", str(save), "--model", "judge-x"]
    argv += ["--base-url", server.url + "/v1", "--api-key-env", "MARKER_KEY", "--concurrency", "1"]
    return [*argv, "--backoff", "0", "--max-attempts", "3", "--json", str(save / "run.json")]


def test_echoed_key_appears_in_no_output_log_or_file(
    results: tuple[Path, dict],
    bench: tuple[Path, dict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sparkle_video.bench.report import build_report
    from sparkle_video.cli import main

    save, _ = results
    fresh = tmp_path / "fresh"
    shutil.copytree(save, fresh)
    monkeypatch.setenv("MARKER_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    server = ScriptedServer(list(STEPS))
    try:
        assert main(_argv(bench[0], save, server)) == 1  # sample 2 was given up
        out = capsys.readouterr()
        # the server really echoed the key: every request carried it
        assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in server.requests)
        assert len(server.requests) == 7
        build_report([str(save)], str(tmp_path / "report" / "report.html"))
        summary = json.loads((save / "judge-x_sparkle_summary.json").read_text())
        [failed] = summary["problems"]["failed"]
        assert "InternalServerError" in failed["reason"] and REDACTED in failed["reason"]
        records = [json.loads(x) for p in save.glob("*_score.jsonl") for x in p.read_text().splitlines()]
        assert sum(REDACTED in r["result"] for r in records) == 2 and len(records) == 3
        assert "WARNING" in caplog.text and REDACTED in caplog.text
        everything = out.out + out.err + caplog.text + written(save) + written(tmp_path / "report")
        assert leaks(everything) == []

        # the same run in a fresh interpreter, at -v (HTTP clients' debug logs included)
        server.steps = list(STEPS)
        env = {**os.environ, "MARKER_KEY": KEY}
        proc = subprocess.run(
            [sys.executable, "-m", "sparkle_video.cli", "-v", *_argv(bench[0], fresh, server)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "DEBUG" in proc.stderr and REDACTED in proc.stderr + proc.stdout
        assert leaks(proc.stdout + proc.stderr + written(fresh)) == []
    finally:
        server.close()
