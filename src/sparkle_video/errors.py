"""Errors raised by sparkle-video, and the record of what was skipped."""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Iterable

logger = logging.getLogger("sparkle_video")

ERROR_MODES = ("raise", "skip")


class SparkleDataError(ValueError):
    """A file, row or sample that does not follow the Sparkle layout.

    The message always names the file and, where there is one, the row or sample id.
    """

    def __init__(self, message: str, *, path: str | None = None, sample_id: str | None = None):
        parts = [message]
        if path is not None:
            parts.append(f"file: {path}")
        if sample_id is not None:
            parts.append(f"id: {sample_id}")
        super().__init__(redact(" | ".join(parts)))
        self.path = path
        self.sample_id = sample_id
        self.reason = redact(message)


class SparkleHubError(RuntimeError):
    """The Hub (or another remote store) could not be reached or answered with a server error.

    Distinct from :class:`SparkleDataError` on purpose: an outage says nothing about the data, so it is
    never counted as a bad sample under ``errors="skip"``. The message names the repo, revision and file.
    """

    def __init__(
        self,
        message: str,
        *,
        repo_id: str | None = None,
        revision: str | None = None,
        path: str | None = None,
    ):
        parts = [message]
        if repo_id is not None:
            parts.append(f"repo: {repo_id}")
        if revision is not None:
            parts.append(f"revision: {revision}")
        if path is not None:
            parts.append(f"file: {path}")
        super().__init__(redact(" | ".join(parts)))
        self.repo_id = repo_id
        self.revision = revision
        self.path = path
        self.reason = redact(message)


def check_error_mode(errors: str) -> str:
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be one of {ERROR_MODES}, got {errors!r}")
    return errors


class SkipReport:
    """Samples skipped under ``errors="skip"``: how many and which, never silently.

    A report can also collect skips made in other processes (streaming through DataLoader workers, or
    one process per rank): :meth:`spool_to` gives it a folder where each process appends what it skips
    (:meth:`spooled` is the writer side), and the report reads those records back whenever it is
    looked at (``len``, ``skipped``, ``ids``, ``summary``). So after (or during) iteration the caller's
    report names every skipped sample, whichever process skipped it.
    """

    def __init__(self, skipped: Iterable[tuple[str, str]] = (), *, spool: str | os.PathLike | None = None):
        self._items: list[tuple[str, str]] = [tuple(x) for x in skipped]  # type: ignore[misc]
        self._write_spool = os.fspath(spool) if spool is not None else None
        self._read_spools: list[str] = []
        self._offsets: dict[str, int] = {}

    # -- writer side ---------------------------------------------------------------------------
    @classmethod
    def spooled(cls, spool: str | os.PathLike) -> SkipReport:
        """A report that also appends each skip to ``spool`` (one JSONL file per process)."""
        return cls(spool=spool)

    def add(self, key: str, reason: str) -> None:
        self._items.append((key, reason))
        logger.warning("skipped %s: %s", key, reason)
        if self._write_spool is not None:
            os.makedirs(self._write_spool, exist_ok=True)
            line = json.dumps({"key": key, "reason": reason}, ensure_ascii=False) + "\n"
            with open(os.path.join(self._write_spool, f"{os.getpid()}.jsonl"), "a", encoding="utf-8") as f:
                f.write(line)

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        for key, reason in items:
            self.add(key, reason)

    # -- reader side ---------------------------------------------------------------------------
    def spool_to(self, spool: str | os.PathLike) -> None:
        """Read back, from now on, the skips that any process appends to ``spool``."""
        path = os.fspath(spool)
        if path not in self._read_spools:
            self._read_spools.append(path)

    def _sync(self) -> None:
        """Take in complete new lines from the spool files (a record already present is not repeated)."""
        known = set(self._items)
        for spool in self._read_spools:
            try:
                names = sorted(n for n in os.listdir(spool) if n.endswith(".jsonl"))
            except FileNotFoundError:
                continue
            for name in names:
                path = os.path.join(spool, name)
                with open(path, "rb") as f:
                    f.seek(self._offsets.get(path, 0))
                    data = f.read()
                complete = data[: data.rfind(b"\n") + 1]
                self._offsets[path] = self._offsets.get(path, 0) + len(complete)
                for line in complete.decode("utf-8").splitlines():
                    record = json.loads(line)
                    item = (record["key"], record["reason"])
                    if item not in known:
                        known.add(item)
                        self._items.append(item)

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """``(id or file, reason)`` for every skipped sample, in the order they were skipped."""
        self._sync()
        return self._items

    def __len__(self) -> int:
        return len(self.skipped)

    def __repr__(self) -> str:
        return f"SkipReport({len(self)} skipped)"

    @property
    def ids(self) -> list[str]:
        return [key for key, _ in self.skipped]

    def summary(self) -> str:
        items = self.skipped
        if not items:
            return "0 samples skipped"
        lines = [f"{len(items)} samples skipped:"]
        lines += [f"  {key}: {reason}" for key, reason in items]
        return "\n".join(lines)

    def __getstate__(self) -> dict:
        self._sync()
        return dict(self.__dict__)


def handle(error: SparkleDataError, errors: str, report: SkipReport | None, key: str | None = None) -> None:
    """Raise ``error`` or record it as skipped, depending on ``errors``."""
    if errors == "raise":
        raise error
    if report is None:
        raise error
    report.add(key or error.sample_id or error.path or "?", error.reason)


# -- secrets --------------------------------------------------------------------------------------
#: What a secret is replaced with wherever it turns up.
REDACTED = "[redacted]"
#: Keys shorter than this are not registered: replacing a 3-letter string everywhere would mangle
#: ordinary text, and no real API key is that short.
MIN_SECRET_LEN = 8
_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def secret_forms(secret: str) -> set[str]:
    """``secret`` and the encodings it takes on the way to a server and back.

    A server or proxy may echo it raw (a bearer header), percent-encoded (a URL query), JSON-escaped
    (inside an error body) or base64-encoded (a basic-auth header), so each form is redacted.
    """
    from urllib.parse import quote, quote_plus

    forms = {
        secret,
        quote(secret, safe=""),
        quote_plus(secret),
        json.dumps(secret)[1:-1],
        base64.b64encode(secret.encode()).decode("ascii").rstrip("="),
    }
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


def register_secret(secret: str | None) -> None:
    """Remember ``secret`` (an API key in use) so that :func:`redact` removes it from now on."""
    if secret and len(secret) >= MIN_SECRET_LEN:
        with _secrets_lock:
            _secrets.update(secret_forms(secret))


def redact(text: object, secrets: Iterable[str] = ()) -> str:
    """``str(text)`` with every registered secret (and ``secrets``) in any of its forms replaced.

    Applied to whatever came from a server or an exception before it is logged, raised in one of our
    errors or written to a record, summary or report: some gateways echo the request's key back.
    """
    out = str(text)
    with _secrets_lock:
        forms = set(_secrets)
    for extra in secrets:
        if extra and len(extra) >= MIN_SECRET_LEN:
            forms |= secret_forms(extra)
    for form in sorted(forms, key=len, reverse=True):  # longest first: a form may contain another
        out = out.replace(form, REDACTED)
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that redacts registered secrets from each record's final message.

    Installed on the command line's handlers, so third-party loggers (HTTP clients at ``-v``) cannot
    print a key either; our own messages are redacted where they are made.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = record.getMessage()
            cleaned = redact(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
            if record.exc_info and not record.exc_text:
                record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            elif record.exc_text:
                record.exc_text = redact(record.exc_text)
        return True
