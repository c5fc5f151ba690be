"""Judge-free scoring of a whole result set, with per-theme and macro aggregates.

Per-sample metrics are appended to ``{save_dir}/sparkle_metrics.jsonl`` as they are computed (a rerun
only computes what is missing). When judge records exist for the same results, the per-dimension
Spearman rank correlation between each metric and its judge dimension is reported: that is how a judge
(or a metric) gets checked.
"""

from __future__ import annotations

import logging
import math
import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data.masks import load_mask
from ..errors import SparkleDataError
from .judge import RecordWriter, json_lines, load_judge_records
from .metrics import METRIC_NAMES, MetricConfig, compute_metrics, spearman
from .results import MAX_COMPARED_FRAMES, ResultEntry, ResultSet, scan_results
from .rubric import get_protocol

logger = logging.getLogger("sparkle_video.bench")

METRICS_FILE = "sparkle_metrics.jsonl"

#: Which judge dimension each metric is meant to track (for rank correlation).
METRIC_TO_JUDGE: dict[str, str] = {
    "background_dynamics": "Background Dynamics",
    "foreground_integrity": "Foreground Integrity",
    "foreground_motion_consistency": "Foreground Motion Consistency",
    "temporal_stability": "Overall Visual Quality",
}


def find_mask(masks_dir: str | os.PathLike | None, theme: str, sid: str) -> Path | None:
    """A BAIT mask for ``sid``: ``{dir}/{theme}/{id}.npz``, ``{dir}/{id}.npz`` or the Sparkle layout
    ``{dir}/intermediate_data/{theme}/source_video_mask/{id}.npz``."""
    if masks_dir is None:
        return None
    root = Path(masks_dir)
    for candidate in (
        root / theme / f"{sid}.npz",
        root / f"{sid}.npz",
        root / "intermediate_data" / theme / "source_video_mask" / f"{sid}.npz",
    ):
        if candidate.is_file():
            return candidate
    return None


def read_metric_records(path: str | os.PathLike) -> dict[str, dict]:
    """Per-sample metric records by id (last wins); unreadable lines are skipped (their ids are scored
    again). Lines are decoded one by one, so a line a crash cut inside a character is one bad line."""
    out: dict[str, dict] = {}
    p = Path(path)
    if not p.is_file():
        return out
    for rec in json_lines(p):
        try:
            out[str(rec["id"])] = rec
        except (KeyError, TypeError):  # not JSON (None) or no id
            continue
    return out


def _mean(values: Iterable[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def summarize_metrics(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Per-theme mean of each metric (``None`` values skipped) and a macro row = mean over themes."""
    by_theme: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for rec in records:
        by_theme[str(rec.get("edit_type"))].append(rec)
    themes: dict[str, dict[str, Any]] = {}
    for theme in sorted(by_theme):
        recs = by_theme[theme]
        row: dict[str, Any] = {m: _mean(r.get(m) for r in recs) for m in METRIC_NAMES}
        row["count"] = len(recs)
        themes[theme] = row
    macro: dict[str, Any] = {}
    if themes:
        macro = {m: _mean(t[m] for t in themes.values()) for m in METRIC_NAMES}
        macro["count"] = sum(t["count"] for t in themes.values())
    return {"metrics": list(METRIC_NAMES), "themes": themes, "macro": macro}


def judge_correlation(
    metric_records: Iterable[Mapping[str, Any]],
    judge_records: Iterable[Mapping[str, Any]],
    protocol: str = "sparkle",
) -> dict[str, dict[str, Any]]:
    """Spearman correlation between each metric and its judge dimension, over ids scored by both."""
    proto = get_protocol(protocol)
    judged = {str(r["id"]): r["scores"] for r in judge_records}
    metrics = {str(r["id"]): r for r in metric_records}
    out: dict[str, dict[str, Any]] = {}
    for metric, dim in METRIC_TO_JUDGE.items():
        if dim not in proto.dimensions:
            continue
        k = proto.dimensions.index(dim)
        pairs = [
            (float(m[metric]), float(judged[sid][k]))
            for sid, m in metrics.items()
            if sid in judged and m.get(metric) is not None
        ]
        rho = spearman([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 2 else float("nan")
        out[metric] = {"judge_dimension": dim, "spearman": None if math.isnan(rho) else rho, "n": len(pairs)}
    return out


@dataclass
class ScoreRun:
    """Outcome of :func:`score_results` for one result folder."""

    save_dir: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    computed: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    results: ResultSet | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    correlation: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        counts = self.results.counts() if self.results else {}
        problems = self.results.problems() if self.results else {}
        truncated = [
            {
                "id": r["id"],
                "source_frames": min(r["source_frames"], MAX_COMPARED_FRAMES),
                "edited_frames": r["edited_frames"],
            }
            for r in self.records
            if r.get("truncated")
        ]
        return {
            "save_dir": str(self.save_dir),
            "counts": {
                **counts,
                "computed": self.computed,
                "reused": self.reused,
                "failed": len(self.failed),
                "truncated": len(truncated),
            },
            "problems": {
                **problems,
                "failed": [{"id": s, "reason": r} for s, r in self.failed],
                "truncated": truncated,
            },
            "summary": self.summary,
            "judge_correlation": self.correlation,
        }


def _score_one(
    entry: ResultEntry, masks_dir: str | os.PathLike | None, config: MetricConfig
) -> dict[str, Any]:
    mask_path = find_mask(masks_dir, entry.theme, entry.id)
    mask = load_mask(str(mask_path)) if mask_path is not None else None
    metrics = compute_metrics(entry.row["source_video"], str(entry.path), mask=mask, config=config)
    return {
        "id": entry.id,
        "edit_type": entry.theme,
        "subtheme": entry.row.get("subtheme"),
        "scene": entry.row.get("scene"),
        **metrics.as_dict(),
    }


def score_results(
    rows: Iterable[Mapping[str, Any]],
    save_dir: str | os.PathLike,
    *,
    masks_dir: str | os.PathLike | None = None,
    config: MetricConfig = MetricConfig(),
    workers: int = 1,
    overwrite: bool = False,
    protocol: str = "sparkle",
    progress: bool = True,
) -> ScoreRun:
    """Compute the judge-free metrics for every result of ``rows`` in ``save_dir``.

    Missing, misplaced and unreadable results are counted and named in the run's report; a sample that
    fails never stops the others.
    """
    root = Path(save_dir)
    rows = [dict(r) for r in rows]
    results = scan_results(root, rows)
    run = ScoreRun(save_dir=root, results=results)
    out_path = root / METRICS_FILE
    done = {} if overwrite else read_metric_records(out_path)
    if overwrite and out_path.exists():
        out_path.unlink()
    wanted = {e.id for e in results.entries}
    pending = [e for e in results.entries if e.id not in done]
    run.reused = len(results.entries) - len(pending)
    writer = RecordWriter()
    bar = tqdm(total=len(pending), desc="bench score", unit="pair", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_score_one, e, masks_dir, config): e for e in pending}
        for fut, entry in futures.items():
            try:
                rec = fut.result()
            except (SparkleDataError, ValueError, OSError) as e:
                reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
                run.failed.append((entry.id, reason))
                logger.warning("score: %s failed: %s", entry.id, reason)
            else:
                writer.append(out_path, rec)
                done[entry.id] = rec
                run.computed += 1
            bar.update(1)
    bar.close()
    run.records = [done[e.id] for e in results.entries if e.id in done and e.id in wanted]
    run.summary = summarize_metrics(run.records)
    for model, recs in load_judge_records(root, protocol).items():
        run.correlation[model] = judge_correlation(run.records, recs, protocol)
    return run


def format_metrics_table(summary: Mapping[str, Any]) -> str:
    """Plain-text table of :func:`summarize_metrics` output."""
    from .judge import format_table

    short = {
        "background_dynamics": "BgDyn",
        "foreground_integrity": "FgInt",
        "foreground_motion_consistency": "FgMot",
        "temporal_stability": "Stab",
    }
    renamed = {
        "themes": {
            t: {short.get(k, k): v for k, v in row.items()} for t, row in summary.get("themes", {}).items()
        },
        "macro": {short.get(k, k): v for k, v in summary.get("macro", {}).items()},
    }
    return format_table(renamed, columns=list(short.values()))
