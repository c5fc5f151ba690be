"""Per-id, per-stage outcomes on disk: what makes a run resumable and its summary exact.

Each (stage, id) outcome is one small JSON file written atomically after the stage's artefacts, so a
sample either has a complete stage behind its marker or is redone. ``passed`` and ``rejected`` are
final; ``failed`` (an exception, a timeout) is retried by the next run.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import safe_write

#: Stage names, in order (also the ledger's folder names).
STAGES: tuple[str, ...] = ("camera", "frame_edit", "background", "tracking", "final")
STATUSES: tuple[str, ...] = ("passed", "rejected", "failed")


@dataclass(frozen=True)
class Outcome:
    """How one stage ended for one sample."""

    status: str
    reason: str = ""
    error: str = ""
    traceback: str = ""
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    @property
    def final(self) -> bool:
        return self.status != "failed"


def write_atomic(path: str | os.PathLike, data: bytes, root: str | os.PathLike | None = None) -> None:
    """Write ``data`` to a temporary sibling, fsync, then rename it over ``path`` (never half-written);
    refused if ``path`` leads out of ``root`` through a symlink; OS errors as ``SparkleWriteError``."""
    safe_write.write_bytes(path, data, root)


def write_json_atomic(path: str | os.PathLike, value: Any, root: str | os.PathLike | None = None) -> None:
    write_atomic(
        path,
        (json.dumps(value, ensure_ascii=False, sort_keys=True, indent=1) + "\n").encode("utf-8"),
        root,
    )


class Ledger:
    """Outcome markers under ``root/{stage}/{id}.json``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, stage: str, sample_id: str) -> Path:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages: {STAGES}")
        return self.root / stage / f"{sample_id}.json"

    def get(self, stage: str, sample_id: str) -> Outcome | None:
        path = self.path(stage, sample_id)
        try:
            data = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return None
        return Outcome(**data)

    def record(self, stage: str, sample_id: str, outcome: Outcome) -> None:
        write_json_atomic(self.path(stage, sample_id), asdict(outcome), self.root)

    def needs(self, stage: str, sample_id: str) -> bool:
        """True when ``stage`` should run for ``sample_id``: the previous stage passed, this one is not done."""
        index = STAGES.index(stage)
        if index > 0:
            previous = self.get(STAGES[index - 1], sample_id)
            if previous is None or previous.status != "passed":
                return False
        current = self.get(stage, sample_id)
        return current is None or not current.final

    def last(self, sample_id: str) -> tuple[str, Outcome | None]:
        """The furthest stage with an outcome for ``sample_id`` and that outcome."""
        found: tuple[str, Outcome | None] = (STAGES[0], None)
        for stage in STAGES:
            outcome = self.get(stage, sample_id)
            if outcome is None:
                break
            found = (stage, outcome)
            if outcome.status != "passed":
                break
        return found


def reason_kind(reason: str) -> str:
    """A reason with its numbers blanked, so counts group like with like."""
    return re.sub(r"\d+(\.\d+)?", "#", reason.split(" | ")[0]).strip() or "unknown"


def seconds_summary(values: Sequence[float]) -> dict[str, float | int]:
    """Count, total, mean and median of one stage's per-sample seconds (zeros when none ran)."""
    if not values:
        return {"count": 0, "total": 0.0, "mean": 0.0, "median": 0.0}
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    total = sum(ordered)
    return {
        "count": len(ordered),
        "total": round(total, 3),
        "mean": round(total / len(ordered), 3),
        "median": round(median, 3),
    }


def summarise(
    ledger: Ledger,
    sample_ids: Sequence[str],
    extra: Iterable[tuple[str, str]] = (),
    details: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per-stage counts and seconds, grouped reasons, and each sample's fate (deterministic).

    ``details`` adds what the ledger does not know to each sample's entry (the source file as the user
    gave it, the theme and keyword stage 2 chose, the published id).
    """
    stages: dict[str, Counter[str]] = {stage: Counter() for stage in STAGES}
    reasons: dict[str, Counter[str]] = {stage: Counter() for stage in STAGES}
    seconds: dict[str, list[float]] = {stage: [] for stage in STAGES}
    samples: dict[str, dict[str, Any]] = {}
    final_ids: list[str] = []
    for sid in sorted(sample_ids):
        timing: dict[str, float] = {}
        for stage in STAGES:
            outcome = ledger.get(stage, sid)
            if outcome is None:
                if ledger.needs(stage, sid) or stage == STAGES[0]:
                    stages[stage]["pending"] += 1
                break
            stages[stage][outcome.status] += 1
            timing[stage] = outcome.seconds
            seconds[stage].append(outcome.seconds)
            if outcome.status != "passed":
                reasons[stage][f"{outcome.status}: {reason_kind(outcome.reason or outcome.error)}"] += 1
                break
        stage, outcome = ledger.last(sid)
        status = "pending" if outcome is None else outcome.status
        entry: dict[str, Any] = dict((details or {}).get(sid, {}))
        if stage == STAGES[-1] and status == "passed":
            final_ids.append(sid)
            entry.update(status="published", stage=stage, reason="")
        else:
            entry.update(
                stage=stage, status=status, reason="" if outcome is None else outcome.reason or outcome.error
            )
        entry["seconds"] = timing
        samples[sid] = entry
    return {
        "total": len(sample_ids),
        "published": len(final_ids),
        "stages": {stage: dict(sorted(c.items())) for stage, c in stages.items()},
        "seconds": {stage: seconds_summary(v) for stage, v in seconds.items()},
        "reasons": {stage: dict(sorted(c.items())) for stage, c in reasons.items() if c},
        "samples": samples,
        "ignored_files": [{"file": f, "reason": r} for f, r in extra],
    }


def format_table(stats: dict[str, Any]) -> str:
    """The printed summary: one row per stage (counts, mean and median seconds), then the reasons
    grouped by stage and kind, each sample listed under its group with its own reason and numbers."""
    timing = stats.get("seconds", {})
    lines = [
        f"{'stage':<12}{'passed':>8}{'rejected':>10}{'failed':>8}{'pending':>9}{'mean s':>9}{'median s':>10}"
    ]
    for stage, counts in stats["stages"].items():
        t = timing.get(stage, {})
        lines.append(
            f"{stage:<12}{counts.get('passed', 0):>8}{counts.get('rejected', 0):>10}"
            f"{counts.get('failed', 0):>8}{counts.get('pending', 0):>9}"
            f"{t.get('mean', 0.0):>9.2f}{t.get('median', 0.0):>10.2f}"
        )
    lines.append(f"published {stats['published']} of {stats['total']} samples")
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for sid, entry in stats.get("samples", {}).items():
        if entry.get("status") in ("rejected", "failed"):
            kind = f"{entry['status']}: {reason_kind(entry.get('reason', ''))}"
            groups.setdefault((entry.get("stage", ""), kind), []).append((sid, entry))
    for stage in stats["stages"]:
        for (group_stage, kind), members in sorted(groups.items()):
            if group_stage != stage:
                continue
            lines.append(f"  {stage}: {len(members)} x {kind}")
            for sid, entry in members:
                where = f" ({entry['source']})" if entry.get("source") else ""
                lines.append(f"    {sid}{where}: {entry.get('reason', '')}")
    for item in stats.get("ignored_files", []):
        lines.append(f"  ignored {item['file']}: {item['reason']}")
    return "\n".join(lines)
