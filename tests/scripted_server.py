"""A loopback judge endpoint that misbehaves on cue: echoed keys, trickled or huge replies, 401/429s.

Each request takes the next step of ``steps`` (the default step once they run out). A step is a tuple:

- ``("valid", scores)``: a well-formed reply (chat-completions or Gemini shape, by request path)
- ``("echo_valid", scores)``: the same, with the request's credentials quoted in the reply text
- ``("status", code, message, headers)``: that status, an error body quoting ``message``
- ``("echo", code)``: that status, the error body quoting the request's credentials (raw, URL-quoted)
- ``("trickle", gap_s)``: a 200 whose body arrives one byte every ``gap_s`` seconds, never finishing
- ``("huge", declared)``: a 200 with ``Content-Length: declared`` (``None``: no length, connection
  closes at the end) and zero bytes streamed until the client hangs up

The server counts requests and the body bytes it managed to send.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote

from bench_fixtures import SPARKLE_NAMES


def reply_text(scores: list[int]) -> str:
    return "Reasoning: fine.\n" + "\n".join(f"{n}: {s}" for n, s in zip(SPARKLE_NAMES, scores, strict=True))


class ScriptedServer:
    """A real HTTP server on 127.0.0.1 answering every request from a script (see module docstring)."""

    def __init__(self, steps: list[tuple] | None = None, default: tuple = ("valid", [4] * 6)):
        self.steps = list(steps or [])
        self.default = default
        self.requests: list[dict] = []
        self.bytes_sent = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                server._answer(self)

            def do_GET(self) -> None:
                server._answer(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def _next(self) -> tuple:
        with self._lock:
            return self.steps.pop(0) if self.steps else self.default

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in h.headers.items()}
        with self._lock:
            self.requests.append({"method": h.command, "path": h.path, "headers": headers})
        step = self._next()
        kind = step[0]
        creds = " ".join(
            f"{name}={headers[name]} quoted={quote(headers[name], safe='')}"
            for name in ("authorization", "api-key", "x-goog-api-key")
            if name in headers
        )
        gemini = ":generateContent" in h.path
        if kind in ("valid", "echo_valid"):
            text = reply_text(step[1]) + (
                f"\nYou sent {creds} (query {h.path})" if kind == "echo_valid" else ""
            )
            self._json(h, 200, self._reply(text, gemini))
        elif kind == "status":
            _, code, message, extra = step
            self._json(h, code, {"error": {"message": message, "code": code}}, extra)
        elif kind == "echo":
            self._json(h, step[1], {"error": {"message": f"rejected: you sent {creds}", "code": step[1]}})
        elif kind == "trickle":
            self._stream(h, {"Content-Length": "100000"}, lambda: (b"{", step[1]))
        elif kind == "huge":
            declared = step[1]
            head = {"Content-Length": str(declared)} if declared is not None else {"Connection": "close"}
            self._stream(h, head, lambda: (b"\0" * 65536, 0.0))
        else:  # pragma: no cover - a typo in a test's script
            raise ValueError(kind)

    @staticmethod
    def _reply(text: str, gemini: bool) -> dict:
        if gemini:
            return {
                "candidates": [
                    {"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}
                ]
            }
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "judge",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
        }

    def _json(self, h: BaseHTTPRequestHandler, status: int, payload: dict, extra: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)
        with self._lock:
            self.bytes_sent += len(data)

    def _stream(self, h: BaseHTTPRequestHandler, head: dict, chunk: object) -> None:
        """Send ``chunk()`` (bytes, pause) again and again until the client hangs up or the server stops."""
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        for k, v in head.items():
            h.send_header(k, v)
        h.end_headers()
        h.close_connection = True
        try:
            while not self.stop.is_set():
                data, pause = chunk()  # type: ignore[operator]
                h.wfile.write(data)
                h.wfile.flush()
                with self._lock:
                    self.bytes_sent += len(data)
                if pause:
                    self.stop.wait(pause)  # the server's own pacing
        except OSError:  # the client hung up: what the tests want
            pass

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
