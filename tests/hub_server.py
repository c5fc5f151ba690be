"""A loopback Hugging Face Hub for tests: local folders served as dataset repos on 127.0.0.1.

It speaks exactly the part of the Hub HTTP API that ``huggingface_hub`` 2.4 uses to read a dataset repo
(found by reading its ``hf_api``, ``file_download``, ``_snapshot_download`` and ``hf_file_system``):

- ``GET /api/datasets/{repo}`` and ``GET /api/datasets/{repo}/revision/{rev}``: repo info with ``sha``
- ``GET /api/datasets/{repo}/tree/{rev}[/{path}]?recursive=&expand=``: tree listing, paginated with a
  ``Link: <...>; rel="next"`` header like the Hub's
- ``POST /api/datasets/{repo}/paths-info/{rev}``: info on given paths
- ``HEAD``/``GET /datasets/{repo}/resolve/{rev}/{path}``: file bytes with ``ETag``, ``X-Repo-Commit``,
  ``Content-Length``, and ``Range`` -> ``206`` with ``Content-Range``
- ``404`` with ``X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound``

Every request is logged (method, path, range, status, body bytes sent), and faults can be injected per
path: an HTTP status (``500``), a connection dropped part-way through the body, or a response held back
until the client gives up. Hub code under test runs in a subprocess (``run_hub_python``) whose
environment points ``HF_ENDPOINT`` at the server, because ``huggingface_hub`` reads its endpoint and
offline switch when it is imported.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

TREE_PAGE_SIZE = 1000


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str  # repo-relative file path for resolve requests, else the URL path
    kind: str  # "info" | "tree" | "paths-info" | "resolve"
    repo: str | None
    revision: str | None
    range: str | None
    status: int
    bytes_sent: int


@dataclass
class Fault:
    """What to do instead of answering normally, for requests whose file path matches ``pattern``."""

    pattern: str
    action: str  # "status" | "drop" | "stall"
    status: int = 500
    after_bytes: int = 0
    times: int | None = None  # None: every matching request
    methods: tuple[str, ...] = ("GET",)
    kinds: tuple[str, ...] = ("resolve",)
    hits: int = 0


@dataclass
class Repo:
    commits: dict[str, Path] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LoopbackHub:
    """Serve local folders as Hub dataset repos on ``http://127.0.0.1:{port}``."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.log: list[Request] = []
        self.faults: list[Fault] = []
        self.lock = threading.Lock()
        self.release = threading.Event()  # set to let stalled responses go (and on stop)
        self._etags: dict[Path, tuple[str, str]] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.page_size = TREE_PAGE_SIZE
        self.epoch = 0  # bumped by clear(): requests begun before it are not logged after it
        self.commits: dict[str, str] = {}  # for tests: repo id -> the commit they published
        self._hooks: list[tuple[str, Any]] = []

    # -- repos ------------------------------------------------------------------------------------
    def add_repo(self, repo_id: str, folder: str | os.PathLike, branch: str = "main") -> str:
        """Publish ``folder`` as a new commit of dataset ``repo_id`` on ``branch``; return the commit sha."""
        folder = Path(folder)
        h = hashlib.sha1(f"{repo_id}:{branch}:{folder.resolve()}".encode())
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                h.update(str(p.relative_to(folder)).encode() + str(p.stat().st_size).encode())
        sha = h.hexdigest()
        repo = self.repos.setdefault(repo_id, Repo())
        repo.commits[sha] = folder
        repo.branches[branch] = sha
        return sha

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- faults and log ---------------------------------------------------------------------------
    def fail(self, pattern: str, status: int = 500, times: int | None = None, **kw: Any) -> Fault:
        return self._add(Fault(pattern, "status", status=status, times=times, **kw))

    def drop(self, pattern: str, after_bytes: int = 1024, times: int | None = None, **kw: Any) -> Fault:
        return self._add(Fault(pattern, "drop", after_bytes=after_bytes, times=times, **kw))

    def stall(self, pattern: str, times: int | None = None, **kw: Any) -> Fault:
        return self._add(Fault(pattern, "stall", times=times, **kw))

    def after(self, pattern: str, action: Any) -> None:
        """Run ``action()`` once, right after the first file GET matching ``pattern`` is answered."""
        with self.lock:
            self._hooks.append((pattern, action))

    def _run_hooks(self, path: str) -> None:
        with self.lock:
            due = [h for h in self._hooks if fnmatch.fnmatch(path, h[0])]
            self._hooks = [h for h in self._hooks if h not in due]
        for _, action in due:
            action()

    def _add(self, fault: Fault) -> Fault:
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """Forget the request log and every fault."""
        with self.lock:
            self.epoch += 1
            self.log.clear()
            self.faults.clear()
            self._hooks.clear()
            self.release.set()  # let any stalled response go, and arm a new event for later stalls
            self.release = threading.Event()

    def requests(self, kind: str | None = None, method: str | None = None) -> list[Request]:
        with self.lock:
            return [
                r
                for r in self.log
                if (kind is None or r.kind == kind) and (method is None or r.method == method)
            ]

    def bytes_served(self, pattern: str = "*") -> int:
        """Body bytes sent for files matching ``pattern`` (file GETs only)."""
        return sum(r.bytes_sent for r in self.requests("resolve", "GET") if fnmatch.fnmatch(r.path, pattern))

    def files_fetched(self) -> set[str]:
        return {r.path for r in self.requests("resolve", "GET") if r.status in (200, 206)}

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> LoopbackHub:
        self.release.clear()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.hub = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop answering: close the listening socket and every open connection."""
        self.release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- repo content -----------------------------------------------------------------------------
    def _resolve(self, repo_id: str, revision: str) -> tuple[Repo | None, str | None]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None
        revision = unquote(revision)
        if revision in repo.commits:
            return repo, revision
        return repo, repo.branches.get(revision)

    def etag(self, path: Path) -> tuple[str, str]:
        """(git blob sha1, sha256) of a file, computed once."""
        if path not in self._etags:
            data = path.read_bytes()
            self._etags[path] = (_git_blob_sha1(data), hashlib.sha256(data).hexdigest())
        return self._etags[path]

    def entries(self, folder: Path, sub: str, recursive: bool) -> list[dict[str, Any]]:
        base = folder / sub if sub else folder
        if not base.is_dir():
            return []
        paths = sorted(base.rglob("*") if recursive else base.iterdir())
        out = []
        for p in paths:
            rel = p.relative_to(folder).as_posix()
            if p.is_dir():
                out.append({"type": "directory", "oid": hashlib.sha1(rel.encode()).hexdigest(), "path": rel})
            else:
                out.append({"type": "file", "oid": self.etag(p)[0], "size": p.stat().st_size, "path": rel})
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    hub: LoopbackHub

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.conn_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_all(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


_API_RE = re.compile(
    r"^/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/(?P<op>revision|tree|paths-info)/(?P<rest>.*))?$"
)
_RESOLVE_RE = re.compile(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    # -- dispatch ---------------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        self._method, self._sent, self._status, self._drop = method, 0, 0, None
        epoch = hub.epoch
        self._entry = Request(method, url.path, "other", None, None, self.headers.get("Range"), 0, 0)
        try:
            if m := _RESOLVE_RE.match(url.path):
                self._entry.kind, self._entry.repo = "resolve", m["repo"]
                self._entry.revision, self._entry.path = unquote(m["rev"]), unquote(m["path"])
                if self._fault():
                    return
                self._resolve(m["repo"], m["rev"], unquote(m["path"]))
            elif m := _API_RE.match(url.path):
                op = m["op"] or "info"
                self._entry.kind, self._entry.repo = {"revision": "info"}.get(op, op), m["repo"]
                if self._fault():
                    return
                self._api(m["repo"], op, m["rest"] or "", parse_qs(url.query))
            else:
                self._send_json(404, {"error": "not found"})
        finally:
            self._entry.status, self._entry.bytes_sent = self._status, self._sent
            with hub.lock:
                if hub.epoch == epoch:
                    hub.log.append(self._entry)
            if self._entry.kind == "resolve" and method == "GET":
                hub._run_hooks(self._entry.path)

    def _fault(self) -> bool:
        hub = self.server.hub
        with hub.lock:
            fault = next(
                (
                    f
                    for f in hub.faults
                    if self._entry.kind in f.kinds
                    and self._method in f.methods
                    and fnmatch.fnmatch(self._entry.path, f.pattern)
                    and (f.times is None or f.hits < f.times)
                ),
                None,
            )
            if fault is None or fault.action == "drop":  # drops happen mid-body, in _send_file
                self._drop = fault
                if fault is not None:
                    fault.hits += 1
                return False
            fault.hits += 1
        if fault.action == "stall":  # hold the response until released (the client times out first)
            hub.release.wait(30)
            self.close_connection = True
            return True
        self._send_json(fault.status, {"error": f"injected {fault.status}"}, {"Retry-After": "0"})
        return True

    # -- API --------------------------------------------------------------------------------------
    def _api(self, repo_id: str, op: str, rest: str, query: dict[str, list[str]]) -> None:
        hub = self.server.hub
        if op == "info":
            rev, sub = "main", ""
        elif op in ("revision", "paths-info"):
            rev, sub = rest, ""
        else:  # tree/{rev}[/{path}]
            rev, _, sub = rest.partition("/")
            sub = unquote(sub)
        repo, sha = hub._resolve(repo_id, rev)
        if repo is None:
            return self._send_json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if sha is None:
            return self._send_json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        folder = repo.commits[sha]
        if op in ("info", "revision"):
            files = [e["path"] for e in hub.entries(folder, "", True) if e["type"] == "file"]
            return self._send_json(
                200,
                {"id": repo_id, "sha": sha, "private": False, "siblings": [{"rfilename": f} for f in files]},
            )
        if op == "paths-info":
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            wanted = set(form.get("paths", []))
            out = [e for e in hub.entries(folder, "", True) if e["path"] in wanted]
            return self._send_json(200, out)
        if sub and not (folder / sub).is_dir():
            return self._send_json(404, {"error": "not found"}, {"X-Error-Code": "EntryNotFound"})
        entries = hub.entries(folder, sub, query.get("recursive", ["False"])[0].lower() == "true")
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start : start + hub.page_size]
        headers = {}
        if start + hub.page_size < len(entries):
            q = f"recursive={query.get('recursive', ['False'])[0]}&expand={query.get('expand', ['False'])[0]}"
            nxt = f"{hub.url}{urlsplit(self.path).path}?{q}&cursor={start + hub.page_size}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._send_json(200, page, headers)

    # -- files ------------------------------------------------------------------------------------
    def _resolve(self, repo_id: str, rev: str, path: str) -> None:
        hub = self.server.hub
        repo, sha = hub._resolve(repo_id, rev)
        if repo is None:
            return self._send_json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        if sha is None:
            return self._send_json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
        file = repo.commits[sha] / path
        if ".." in Path(path).parts or not file.is_file():
            return self._send_json(
                404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": sha}
            )
        size = file.stat().st_size
        start, end, status = 0, size, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m or (not m[1] and not m[2]):
                return self._send_json(416, {"error": "bad range"})
            if m[1]:
                start = int(m[1])
                end = min(size, int(m[2]) + 1) if m[2] else size
            else:  # suffix range
                start = max(0, size - int(m[2]))
            if start >= size:
                return self._send_json(
                    416, {"error": "range not satisfiable"}, {"Content-Range": f"bytes */{size}"}
                )
            status = 206
        _git_sha, sha256 = hub.etag(file)
        headers = {
            "ETag": f'"{sha256}"',
            "X-Repo-Commit": sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(end - start),
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        self._status = status
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self._method == "HEAD":
            return
        with open(file, "rb") as f:
            f.seek(start)
            body = f.read(end - start)
        drop = self._drop
        if drop is not None:
            cut = min(len(body), drop.after_bytes)
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self._sent = cut
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)
        self._sent = len(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self._method != "HEAD":
            self.wfile.write(body)
            self._sent = len(body)


# -- running Hub code against the server ---------------------------------------------------------
def hub_env(hub: LoopbackHub | str, cache: str | os.PathLike, offline: bool = False) -> dict[str, str]:
    """An environment for a subprocess that reads the Hub from ``hub`` and caches under ``cache``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=hub.url if isinstance(hub, LoopbackHub) else hub,
        HF_HOME=str(Path(cache) / "home"),
        HF_HUB_CACHE=str(Path(cache) / "hub"),
        HF_HUB_OFFLINE="1" if offline else "0",
        HF_DATASETS_OFFLINE="1",
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_UPDATE_CHECK="1",
        HF_HUB_ETAG_TIMEOUT="5",
        HF_HUB_DOWNLOAD_TIMEOUT="5",
        TQDM_DISABLE="1",
    )
    return env


#: Prepended to scripts run with ``fast_retries``: huggingface_hub still retries every failed request
#: (the request log shows each one) but without its exponential back-off sleeps.
_FAST_RETRIES = """
import huggingface_hub.utils._http as _http, huggingface_hub.file_download as _fd, time as _time, types as _types
_http.time = _fd.time = _types.SimpleNamespace(sleep=lambda s: None, time=_time.time, monotonic=_time.monotonic)
"""


def run_hub_python(
    script: str,
    hub: LoopbackHub | str,
    cache: str | os.PathLike,
    *,
    offline: bool = False,
    fast_retries: bool = False,
    timeout: float = 300,
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter pointed at the loopback Hub."""
    env = hub_env(hub, cache, offline)
    env.update(env_extra or {})
    code = (_FAST_RETRIES if fast_retries else "") + script
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def last_json(proc: subprocess.CompletedProcess) -> Any:
    """The JSON value a script printed on its last stdout line (with its stderr when it failed)."""
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"script failed (rc={proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return json.loads(lines[-1])


__all__ = ["Fault", "LoopbackHub", "Request", "hub_env", "last_json", "run_hub_python"]
