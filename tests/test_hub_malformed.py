"""A Hub endpoint that answers badly: non-JSON repo info, info without a commit, a tree that is not a
list, a redirect to another host. Each is a one-line ``SparkleHubError`` naming repo, revision and the
endpoint (or the other host), never a bare ``JSONDecodeError``/``TypeError``."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hub_server import last_json, run_hub_python

SHA = "c" * 40


class BadHub:
    """A loopback Hub API whose answer depends on the repo name (``o/<case>``)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                hub.paths.append(self.path)
                case = self.path.split("/")[4] if self.path.startswith("/api/datasets/o/") else ""
                if "/tree/" in self.path:
                    self.send(200, {"not": "a list"} if case == "dict-tree" else [])
                elif case == "html-info":
                    self.send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
                elif case == "no-sha":
                    self.send(200, {"id": "o/no-sha", "siblings": []})
                elif case == "redirect":
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.2:9/api/datasets/o/redirect")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                else:
                    self.send(200, {"id": f"o/{case}", "sha": SHA, "siblings": []})

            def send(self, status: int, body: object, ctype: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


SCRIPT = """
import json
from sparkle_video.data.transport import download_index, resolve_repo
from sparkle_video.errors import SparkleHubError
out = {}
for case in ("html-info", "no-sha", "dict-tree", "redirect"):
    try:
        repo = resolve_repo("o/" + case)
        download_index(repo, ["*.csv"])
        out[case] = "no error"
    except SparkleHubError as e:
        out[case] = [str(e), e.repo_id, e.revision]
    except Exception as e:
        out[case] = "raw " + type(e).__name__
print(json.dumps(out))
"""


@pytest.fixture
def bad_hub():
    hub = BadHub()
    yield hub
    hub.close()


def test_malformed_hub_replies_are_named_hub_errors(bad_hub: BadHub, tmp_path: Path) -> None:
    out = last_json(run_hub_python(SCRIPT, bad_hub.url, tmp_path / "cache", timeout=120))
    url = bad_hub.url
    assert out["html-info"] == [
        f"the Hub answered {url}/api/datasets/o/html-info with a malformed repo info "
        "(JSONDecodeError: Expecting value: line 1 column 1 (char 0)) | repo: o/html-info | revision: main",
        "o/html-info",
        "main",
    ]
    assert out["no-sha"][0] == (
        f"the Hub answered {url}/api/datasets/o/no-sha with a malformed repo info (ValueError: no commit sha)"
        " | repo: o/no-sha | revision: main"
    )
    message, repo_id, revision = out["dict-tree"]
    assert (repo_id, revision) == ("o/dict-tree", SHA)
    assert message.startswith(
        f"the Hub answered {url}/api/datasets/o/dict-tree/tree/{SHA} with a malformed tree listing (TypeError: "
    )
    assert message.endswith(f" | repo: o/dict-tree | revision: {SHA}")
    message, repo_id, _ = out["redirect"]
    assert repo_id == "o/redirect"
    assert message.startswith(
        "the Hub redirected to another host, 127.0.0.2, and that host failed (ConnectError"
    )
    assert "the Hub cannot be reached" not in message
    assert all("\n" not in v[0] for v in out.values())
