"""Errors raised by sparkle-video, and the record of what was skipped."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

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
        super().__init__(" | ".join(parts))
        self.path = path
        self.sample_id = sample_id
        self.reason = message


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
        super().__init__(" | ".join(parts))
        self.repo_id = repo_id
        self.revision = revision
        self.path = path
        self.reason = message


def check_error_mode(errors: str) -> str:
    if errors not in ERROR_MODES:
        raise ValueError(f"errors must be one of {ERROR_MODES}, got {errors!r}")
    return errors


@dataclass
class SkipReport:
    """Samples skipped under ``errors="skip"``: how many and which, never silently."""

    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, key: str, reason: str) -> None:
        self.skipped.append((key, reason))
        logger.warning("skipped %s: %s", key, reason)

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        for key, reason in items:
            self.add(key, reason)

    def __len__(self) -> int:
        return len(self.skipped)

    @property
    def ids(self) -> list[str]:
        return [key for key, _ in self.skipped]

    def summary(self) -> str:
        if not self.skipped:
            return "0 samples skipped"
        lines = [f"{len(self.skipped)} samples skipped:"]
        lines += [f"  {key}: {reason}" for key, reason in self.skipped]
        return "\n".join(lines)


def handle(error: SparkleDataError, errors: str, report: SkipReport | None, key: str | None = None) -> None:
    """Raise ``error`` or record it as skipped, depending on ``errors``."""
    if errors == "raise":
        raise error
    if report is None:
        raise error
    report.add(key or error.sample_id or error.path or "?", error.reason)
