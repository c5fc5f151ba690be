"""The judge's HTTP: a transport with a wall-clock deadline and a reply-size cap, and the reply policy.

Both judge SDKs (``openai`` and ``google-genai``) accept an ``httpx`` client, so both get one built on
:class:`BoundedTransport`. Their own timeouts bound only the gap between two bytes; here every socket
operation of a request waits at most what is left of that request's deadline, so a server trickling a
byte a second cannot hold a worker past ``--timeout``. A reply is read into memory only up to
:data:`MAX_REPLY_BYTES`; a larger one is refused without being buffered.

:func:`classify_failure` turns what an SDK raised into what the run does next: stop the whole run
(401, 403, 404, an unknown model), wait what the server asked for (``Retry-After`` on 429/503, capped)
or back off as usual.
"""

from __future__ import annotations

import email.utils
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import redact

#: Largest reply body read from a judge endpoint (a judge's reply is a few KiB of JSON).
MAX_REPLY_BYTES = 4 * 1024 * 1024
#: Longest ``Retry-After`` honoured; a server asking for more is waited this long.
RETRY_AFTER_MAX_S = 120.0
#: Statuses after which no request can succeed: the run stops at the first one.
FATAL_STATUSES = {
    401: "unauthorized: check the API key",
    403: "forbidden: the key may not use this model or endpoint",
    404: "not found: check the model (or deployment) name and the endpoint",
}
#: Statuses whose ``Retry-After`` header is honoured.
RETRY_AFTER_STATUSES = (429, 503)
_MODEL_MISSING = re.compile(r"model\b.*\b(not found|does not exist|not exist|unknown)", re.IGNORECASE)


def _httpx() -> tuple[Any, Any]:
    """``(httpx, httpcore)``: the 2.x packages both SDKs use, or the 1.x ones where those are absent."""
    try:
        import httpcore2 as httpcore
        import httpx2 as httpx
    except ImportError:  # pragma: no cover - an environment with the older client only
        import httpcore  # type: ignore[no-redef]
        import httpx  # type: ignore[no-redef]
    return httpx, httpcore


class ReplyTooLarge(Exception):
    """A judge reply over the size cap: refused, and not retried (the same server would do it again)."""


class JudgeStopped(RuntimeError):
    """A reply that no retry can change (bad key, no access, unknown model): the run stops at once."""


# -- deadline -------------------------------------------------------------------------------------
_local = threading.local()


def _bounded(timeout: float | None, kind: str) -> float | None:
    """``timeout`` cut to what is left of this thread's request deadline; raises once it has passed."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        _, httpcore = _httpx()
        raise getattr(httpcore, kind)(f"no complete reply within the {_local.budget:g} s request deadline")
    return left if timeout is None else min(timeout, left)


def _make_backend() -> Any:
    """A network backend whose streams bound every read and write by the request deadline."""
    _, httpcore = _httpx()

    class DeadlineStream(httpcore.NetworkStream):
        def __init__(self, inner: Any):
            self._inner = inner

        def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            return self._inner.read(max_bytes, _bounded(timeout, "ReadTimeout"))

        def write(self, buffer: bytes, timeout: float | None = None) -> None:
            self._inner.write(buffer, _bounded(timeout, "WriteTimeout"))

        def close(self) -> None:
            self._inner.close()

        def start_tls(
            self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
        ):
            tls = self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout, "ConnectTimeout"))
            return DeadlineStream(tls)

        def get_extra_info(self, info: str) -> Any:
            return self._inner.get_extra_info(info)

    class DeadlineBackend(httpcore.NetworkBackend):
        def __init__(self) -> None:
            self._inner = httpcore.SyncBackend()

        def connect_tcp(self, host: str, port: int, timeout: float | None = None, **kwargs: Any):
            stream = self._inner.connect_tcp(host, port, _bounded(timeout, "ConnectTimeout"), **kwargs)
            return DeadlineStream(stream)

        def connect_unix_socket(self, path: str, timeout: float | None = None, **kwargs: Any):
            stream = self._inner.connect_unix_socket(path, _bounded(timeout, "ConnectTimeout"), **kwargs)
            return DeadlineStream(stream)

        def sleep(self, seconds: float) -> None:
            self._inner.sleep(seconds)

    return DeadlineBackend()


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """Re-raise an ``httpcore`` error as the ``httpx`` error of the same name (what the SDKs catch)."""
    httpx, httpcore = _httpx()
    try:
        yield
    except httpcore.TimeoutException as e:
        raise getattr(httpx, type(e).__name__, httpx.TimeoutException)(str(e)) from e
    except Exception as e:
        target = next(
            (
                getattr(httpx, c.__name__)
                for c in type(e).__mro__
                if c.__module__.startswith("httpcore") and isinstance(getattr(httpx, c.__name__, None), type)
            ),
            None,
        )
        if target is None:
            raise
        raise target(str(e)) from e


def _read_capped(stream: Any, limit: int, url: str, declared: str | None) -> bytes:
    """The whole body, or :class:`ReplyTooLarge` as soon as it (or its ``Content-Length``) passes ``limit``."""
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ReplyTooLarge(f"{url} sent a {int(declared)}-byte reply; the limit is {limit} bytes")
    chunks, size = [], 0
    for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise ReplyTooLarge(f"{url} sent a reply over the {limit}-byte limit; refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _proxy_for(url: Any) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY`` etc., minus ``NO_PROXY``)."""
    host = url.host
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(url.scheme) or proxies.get("all")


class BoundedTransport:
    """An ``httpx`` transport with a per-request wall-clock deadline and a reply-size cap.

    Every request (connect, upload, headers and body) finishes within ``deadline_s`` or fails with a
    ``ReadTimeout`` naming the deadline; a reply body beyond ``max_reply_bytes`` raises
    :class:`ReplyTooLarge` before more than that is held in memory. Bodies are asked for uncompressed,
    so the cap is on what is kept. Proxies come from the environment, as with the SDKs' own clients.
    """

    def __init__(self, deadline_s: float, max_reply_bytes: int = MAX_REPLY_BYTES):
        if deadline_s <= 0 or max_reply_bytes <= 0:
            raise ValueError("the request deadline and the reply limit must be positive")
        self.deadline_s = float(deadline_s)
        self.max_reply_bytes = int(max_reply_bytes)
        self._pools: dict[str | None, Any] = {}
        self._lock = threading.Lock()

    def _pool(self, proxy: str | None) -> Any:
        httpx, httpcore = _httpx()
        with self._lock:
            if proxy not in self._pools:
                kw = {"ssl_context": httpx.create_ssl_context(), "network_backend": _make_backend()}
                self._pools[proxy] = (
                    httpcore.HTTPProxy(proxy_url=proxy, **kw) if proxy else httpcore.ConnectionPool(**kw)
                )
            return self._pools[proxy]

    def handle_request(self, request: Any) -> Any:
        httpx, httpcore = _httpx()
        url = request.url
        endpoint = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}"
        request.headers["Accept-Encoding"] = "identity"
        limits = dict.fromkeys(("connect", "read", "write", "pool"), self.deadline_s)
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions={"timeout": limits},
        )
        _local.deadline, _local.budget = time.monotonic() + self.deadline_s, self.deadline_s
        try:
            with self._deadline_named(httpx), _as_httpx_errors():
                response = self._pool(_proxy_for(url)).handle_request(core)
                try:
                    declared = next(
                        (v.decode("latin-1") for k, v in response.headers if k.lower() == b"content-length"),
                        None,
                    )
                    body = _read_capped(response.stream, self.max_reply_bytes, endpoint, declared)
                finally:
                    response.close()
        finally:
            _local.deadline = None
        headers = [(k, v) for k, v in response.headers if k.lower() != b"transfer-encoding"]
        return httpx.Response(status_code=response.status, headers=headers, content=body, request=request)

    @contextmanager
    def _deadline_named(self, httpx: Any) -> Iterator[None]:
        """Say which limit ended a request: the socket's own message is a bare "timed out"."""
        try:
            yield
        except httpx.TimeoutException as e:
            if "request deadline" in str(e):
                raise
            raise type(e)(f"no complete reply within the {self.deadline_s:g} s request deadline") from None

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close()
            self._pools.clear()

    def __enter__(self) -> BoundedTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bounded_client(deadline_s: float, max_reply_bytes: int = MAX_REPLY_BYTES) -> Any:
    """An ``httpx.Client`` on :class:`BoundedTransport`, for an SDK's ``http_client`` (no redirects)."""
    httpx, _ = _httpx()

    class _Transport(BoundedTransport, httpx.BaseTransport):
        pass

    return httpx.Client(
        transport=_Transport(deadline_s, max_reply_bytes), timeout=deadline_s, follow_redirects=False
    )


# -- what a failure means -------------------------------------------------------------------------
@dataclass(frozen=True)
class Failure:
    """What the run does after one failed attempt: ``action`` is ``"stop"``, ``"give_up"`` or ``"retry"``;
    ``wait_s`` is the server's ``Retry-After`` (capped) when it sent one."""

    action: str
    message: str
    wait_s: float | None = None


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    err: BaseException | None = exc
    while err is not None and all(err is not e for e in out):
        out.append(err)
        err = err.__cause__ if err.__cause__ is not None or err.__suppress_context__ else err.__context__
    return out


def describe(exc: BaseException) -> str:
    """One redacted line: the error, and its root cause where that says more (e.g. the deadline)."""
    chain = _chain(exc)
    text = f"{type(exc).__name__}: {exc}"
    root = chain[-1]
    if root is not exc and str(root) and str(root) not in text:
        text += f" ({type(root).__name__}: {root})"
    return redact(" ".join(text.split()))[:500]


def retry_after_s(headers: Any, now: float | None = None) -> float | None:
    """Seconds a ``Retry-After`` (or ``retry-after-ms``) header asks for, capped; ``None`` if absent."""
    if headers is None:
        return None
    value: float | None = None
    ms = headers.get("retry-after-ms")
    raw = headers.get("retry-after")
    try:
        if ms is not None:
            value = float(ms) / 1000.0
        elif raw is not None:
            value = float(raw)
    except ValueError:
        try:
            parsed = email.utils.parsedate_to_datetime(raw) if raw else None
        except (TypeError, ValueError):  # neither seconds nor an HTTP date: as if absent
            parsed = None
        if parsed is not None:
            value = parsed.timestamp() - (time.time() if now is None else now)
    if value is None or value != value:  # absent, or NaN
        return None
    return min(RETRY_AFTER_MAX_S, max(0.0, value))


def endpoint_of(response: Any) -> str:
    """``scheme://host/path`` of the request behind ``response`` (never its query), or ``?``."""
    try:
        url = response.request.url
        return redact(f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}")
    except (AttributeError, RuntimeError):
        return "?"


def classify_failure(exc: BaseException) -> Failure:
    """What the run does after ``exc``: stop (no request can succeed), give up on the sample, or retry."""
    for err in _chain(exc):
        if isinstance(err, ReplyTooLarge):
            return Failure("give_up", redact(str(err)))
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if not isinstance(status, int):
        return Failure("retry", describe(exc))
    body = redact(" ".join(str(exc).split()))[:300]
    fatal = FATAL_STATUSES.get(status)
    if fatal is None and status == 400 and _MODEL_MISSING.search(str(exc)):
        fatal = "the endpoint does not know this model"
    if fatal is not None:
        return Failure(
            "stop", f"judge endpoint {endpoint_of(response)} answered HTTP {status} ({fatal}): {body}"
        )
    wait = retry_after_s(getattr(response, "headers", None)) if status in RETRY_AFTER_STATUSES else None
    return Failure("retry", describe(exc), wait)
