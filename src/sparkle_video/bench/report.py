"""A self-contained HTML report over result sets, and a Markdown leaderboard for READMEs.

The report reads only files: the judge's score JSONLs and ``sparkle_metrics.jsonl`` in each result folder
(plus the bench's source videos, when given, for thumbnails). Charts are inline SVG and thumbnails are
inline JPEG, so the single HTML file can be mailed or attached to a pull request.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import safe_write
from ..data.video import VideoReader
from .judge import load_judge_records, summarize, summary_file_name
from .metrics import METRIC_NAMES
from .results import EDITED_SUFFIX, find_edited_files
from .rubric import get_protocol
from .score import METRICS_FILE, read_metric_records, summarize_metrics

logger = logging.getLogger("sparkle_video.bench")

METRIC_SHORT = {
    "background_dynamics": "BgDyn",
    "foreground_integrity": "FgInt",
    "foreground_motion_consistency": "FgMot",
    "temporal_stability": "Stab",
}
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7")


@dataclass
class ResultSummary:
    """What the report knows about one result folder."""

    name: str
    save_dir: Path
    judge_model: str | None = None
    judge: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    judge_records: dict[str, dict] = field(default_factory=dict)
    metric_records: dict[str, dict] = field(default_factory=dict)
    edited_paths: dict[str, Path] = field(default_factory=dict)
    #: Protocol, parse rule and rubric hash from the judge's summary file (empty when there is none).
    judge_settings: dict[str, Any] = field(default_factory=dict)


def read_judge_settings(path: Path) -> dict[str, Any]:
    """``summary.judge_settings`` of a judge summary file, or ``{}``."""
    try:
        return dict(json.loads(path.read_text(encoding="utf-8"))["summary"]["judge_settings"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def settings_warning(summaries: Sequence[ResultSummary]) -> str:
    """A sentence naming result sets judged with different parse rules or rubrics ('' when they agree)."""
    seen = {s.name: s.judge_settings for s in summaries if s.judge}
    distinct = {json.dumps(v, sort_keys=True) for v in seen.values()}
    if len(distinct) <= 1:
        return ""
    parts = [
        f"{name}: parse {v.get('parse', '?')}, rubric {str(v.get('rubric_sha256', '?'))[:12]}"
        for name, v in seen.items()
    ]
    return (
        "Warning: these result sets were judged with different settings, so their judge scores are not comparable: "
        + "; ".join(parts)
        + "."
    )


def collect(
    save_dir: str | os.PathLike,
    name: str | None = None,
    protocol: str = "sparkle",
    judge_model: str | None = None,
) -> ResultSummary:
    """Read a result folder's judge records, metric records and edited videos."""
    root = Path(save_dir)
    summary = ResultSummary(name=name or root.name, save_dir=root)
    judged = load_judge_records(root, protocol, judge_model)
    if judged:
        model = sorted(judged)[0]
        if len(judged) > 1:
            logger.warning("%s has records of several judges %s; reporting %s", root, sorted(judged), model)
        summary.judge_model = model
        summary.judge_records = {str(r["id"]): r for r in judged[model]}
        summary.judge = summarize(judged[model], protocol)
        summary.judge_settings = read_judge_settings(root / summary_file_name(model, protocol))
    summary.metric_records = read_metric_records(root / METRICS_FILE)
    if summary.metric_records:
        summary.metrics = summarize_metrics(summary.metric_records.values())
    for rel in find_edited_files(root):
        summary.edited_paths[Path(rel).name[: -len(EDITED_SUFFIX)]] = root / rel
    return summary


#: The paper's published judge scores (overall, then the protocol's dimensions in ``short_names`` order),
#: shown as labelled reference rows with ``--paper-rows``. Sparkle-Bench: Table of the paper with a GPT
#: judge; OpenVE-Bench: its background-change subset with Gemini.
PUBLISHED: dict[str, tuple[tuple[str, tuple[float, ...]], ...]] = {
    "sparkle": (
        ("Kiwi-Edit", (2.54, 2.92, 2.15, 2.86, 2.90, 1.57, 2.84)),
        ("Lucy-Edit-1.1", (2.74, 3.06, 2.23, 2.78, 3.04, 2.46, 2.83)),
        ("Kiwi-Sparkle", (3.81, 4.10, 3.40, 3.77, 4.05, 3.54, 3.99)),
    ),
    # published order overall / Ins / Cons / VQ; stored here in the protocol's order (Ins, VQ, Cons)
    "openve": (
        ("Kiwi-Edit", (2.58, 2.81, 2.36, 2.58)),
        ("UniVideo (13B)", (2.74, 3.12, 2.46, 2.64)),
        ("Kiwi-Sparkle", (3.29, 3.51, 3.22, 3.15)),
    ),
}
PAPER_LABEL = " (paper)"


def paper_rows(protocol: str = "sparkle") -> list[dict[str, Any]]:
    """The published rows of ``protocol`` as leaderboard rows (no metrics, no counts: ``None``)."""
    proto = get_protocol(protocol)
    rows = []
    for name, values in PUBLISHED[proto.name]:
        overall, *dims = values
        row: dict[str, Any] = {"name": name + PAPER_LABEL, "judge": "published", "overall": overall}
        row.update(dict(zip(proto.short_names, dims, strict=True)))
        row.update({METRIC_SHORT[m]: None for m in METRIC_NAMES})
        row["judged"] = row["scored"] = None
        rows.append(row)
    return rows


def leaderboard_rows(
    summaries: Sequence[ResultSummary], protocol: str = "sparkle", paper: bool = False
) -> list[dict[str, Any]]:
    """One row per result set: judge macro scores then metric macros; sorted by judge overall.

    ``paper`` adds the published rows (labelled ``(paper)``), sorted in with the others.
    """
    proto = get_protocol(protocol)
    rows = paper_rows(protocol) if paper else []
    for s in summaries:
        macro = s.judge.get("macro", {})
        mmacro = s.metrics.get("macro", {})
        row: dict[str, Any] = {"name": s.name, "judge": s.judge_model, "overall": macro.get("overall")}
        row.update({k: macro.get(k) for k in proto.short_names})
        row.update({METRIC_SHORT[m]: mmacro.get(m) for m in METRIC_NAMES})
        row["judged"] = int(macro.get("count", 0) or 0)
        row["scored"] = int(mmacro.get("count", 0) or 0)
        rows.append(row)

    def key(r: dict[str, Any]) -> tuple[float, float]:
        return (-(r["overall"] if r["overall"] is not None else -1.0), -(r["BgDyn"] or 0.0))

    return sorted(rows, key=key)


def _fmt(v: Any, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def leaderboard_markdown(
    summaries: Sequence[ResultSummary], protocol: str = "sparkle", paper: bool = False
) -> str:
    """A Markdown leaderboard (judge overall and dimensions, then judge-free metrics)."""
    proto = get_protocol(protocol)
    cols = ["overall", *proto.short_names, *METRIC_SHORT.values()]
    lines = [
        "| Result | " + " | ".join(c if c != "overall" else "Overall" for c in cols) + " | judged | scored |",
        "|---|" + "---:|" * (len(cols) + 2),
    ]
    for r in leaderboard_rows(summaries, protocol, paper):
        cells = [_fmt(r[c], 3 if c in METRIC_SHORT.values() else 2) for c in cols]
        counts = [str(r[c]) if r[c] is not None else "–" for c in ("judged", "scored")]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " | " + " | ".join(counts) + " |")
    return "\n".join(lines) + "\n"


def bar_chart_svg(
    title: str,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    vmax: float,
    width: int = 560,
    height: int = 220,
) -> str:
    """A grouped bar chart as inline SVG: one group per theme, one bar per result set."""
    pad_l, pad_b, pad_t = 36, 28, 24
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    n_groups, n_series = max(1, len(groups)), max(1, len(series))
    gw = plot_w / n_groups
    bw = gw * 0.8 / n_series
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{pad_l}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 8}" y2="{pad_t + plot_h}" stroke="#888"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        y = pad_t + plot_h * (1 - frac)
        out.append(f'<text x="2" y="{y + 4:.1f}" font-size="10">{vmax * frac:g}</text>')
    for gi, group in enumerate(groups):
        x0 = pad_l + gi * gw + gw * 0.1
        for si, (name, values) in enumerate(series.items()):
            v = values[gi] if gi < len(values) else None
            if v is None:
                continue
            h = plot_h * max(0.0, min(1.0, v / vmax)) if vmax > 0 else 0.0
            x = x0 + si * bw
            out.append(
                f'<rect x="{x:.1f}" y="{pad_t + plot_h - h:.1f}" width="{bw * 0.92:.1f}" height="{h:.1f}" '
                f'fill="{_PALETTE[si % len(_PALETTE)]}"><title>{html.escape(name)} · {html.escape(group)}: '
                f"{v:.3f}</title></rect>"
            )
        out.append(
            f'<text x="{pad_l + gi * gw + gw / 2:.1f}" y="{height - 10}" font-size="11" '
            f'text-anchor="middle">{html.escape(group)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def thumbnail(video: VideoReader | str | os.PathLike, height: int = 96) -> str | None:
    """The middle frame of a video as an inline JPEG data URL (``None`` when it cannot be read)."""
    try:
        reader = video if isinstance(video, VideoReader) else VideoReader(os.fspath(video))
        w = max(2, round(reader.width * height / reader.height / 2) * 2)
        frame = reader.get_frames([reader.num_frames // 2], size=(height, w))[0]
    except Exception as e:  # a broken video shows as a missing thumbnail, never breaks the report
        logger.warning("no thumbnail for %s: %s", getattr(video, "name", video), e)
        return None
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80]
    )
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii") if ok else None


def _legend(names: Sequence[str]) -> str:
    items = [
        f'<span style="display:inline-block;width:10px;height:10px;background:{_PALETTE[i % len(_PALETTE)]}"></span> '
        f"{html.escape(n)}"
        for i, n in enumerate(names)
    ]
    return '<p class="legend">' + " &nbsp; ".join(items) + "</p>"


def _charts(summaries: Sequence[ResultSummary]) -> str:
    themes = sorted(
        {t for s in summaries for t in (*s.judge.get("themes", {}), *s.metrics.get("themes", {}))}
    )
    groups = [*themes, "macro"]
    parts = [_legend([s.name for s in summaries])]

    def values(s: ResultSummary, source: str, key: str) -> list[float | None]:
        table = s.judge if source == "judge" else s.metrics
        rows = {**table.get("themes", {}), "macro": table.get("macro", {})}
        return [rows.get(g, {}).get(key) for g in groups]

    if any(s.judge for s in summaries):
        parts.append(
            bar_chart_svg(
                "Judge overall (1-5)", groups, {s.name: values(s, "judge", "overall") for s in summaries}, 5.0
            )
        )
        parts.append(
            bar_chart_svg(
                "Judge Background Dynamics (1-5)",
                groups,
                {s.name: values(s, "judge", "BgDy") for s in summaries},
                5.0,
            )
        )
    if any(s.metrics for s in summaries):
        for m in METRIC_NAMES:
            parts.append(
                bar_chart_svg(f"{m} (0-1)", groups, {s.name: values(s, "metrics", m) for s in summaries}, 1.0)
            )
    return "\n".join(parts)


def _sample_caption(s: ResultSummary, sid: str, protocol: str) -> str:
    bits = []
    if sid in s.judge_records:
        proto = get_protocol(protocol)
        scores = s.judge_records[sid]["scores"]
        bits.append(" ".join(f"{n}:{v}" for n, v in zip(proto.short_names, scores, strict=False)))
    if sid in s.metric_records:
        m = s.metric_records[sid]
        bits.append(f"BgDyn {_fmt(m.get('background_dynamics'))} FgInt {_fmt(m.get('foreground_integrity'))}")
    return "<br>".join(html.escape(b) for b in bits)


def _samples(
    summaries: Sequence[ResultSummary],
    bench_rows: Mapping[str, Mapping[str, Any]],
    protocol: str,
    max_samples: int,
) -> str:
    ids = sorted({sid for s in summaries for sid in s.edited_paths})[:max_samples]
    if not ids:
        return "<p>No edited videos found.</p>"
    head = "<tr><th>id / prompt</th>" + ("<th>source</th>" if bench_rows else "")
    head += "".join(f"<th>{html.escape(s.name)}</th>" for s in summaries) + "</tr>"
    body = []
    for sid in ids:
        row = bench_rows.get(sid, {})
        cells = [
            f"<td><code>{html.escape(sid)}</code><br><small>{html.escape(str(row.get('prompt', '')))}</small></td>"
        ]
        if bench_rows:
            url = thumbnail(row["source_video"]) if row.get("source_video") is not None else None
            cells.append(f'<td><img src="{url}" alt="source"></td>' if url else "<td>missing</td>")
        for s in summaries:
            path = s.edited_paths.get(sid)
            url = thumbnail(path) if path else None
            img = f'<img src="{url}" alt="{html.escape(s.name)}">' if url else "missing"
            cells.append(f"<td>{img}<br><small>{_sample_caption(s, sid, protocol)}</small></td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="samples">{head}{"".join(body)}</table>'


def _leaderboard_html(summaries: Sequence[ResultSummary], protocol: str, paper: bool = False) -> str:
    proto = get_protocol(protocol)
    cols = ["overall", *proto.short_names, *METRIC_SHORT.values(), "judged", "scored"]
    head = "<tr><th>result</th><th>judge</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>"
    body = []
    for r in leaderboard_rows(summaries, protocol, paper):
        cells = [f"<td>{html.escape(r['name'])}</td>", f"<td>{html.escape(str(r['judge'] or '–'))}</td>"]
        for c in cols:
            v = r[c]
            cells.append(
                f"<td>{v}</td>"
                if isinstance(v, int)
                else f"<td>{_fmt(v, 3 if c in METRIC_SHORT.values() else 2)}</td>"
            )
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="board">{head}{"".join(body)}</table>'


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ddd;padding:4px 8px;text-align:center;vertical-align:top}
.board td:first-child{text-align:left}.samples img{display:block;margin:auto}svg{margin:6px 12px 6px 0}
.legend{font-size:13px}small{color:#555}"""


def build_report(
    save_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    names: Sequence[str] | None = None,
    bench_rows: Iterable[Mapping[str, Any]] | None = None,
    protocol: str = "sparkle",
    judge_model: str | None = None,
    max_samples: int = 24,
    title: str = "Sparkle-Bench report",
    paper: bool = False,
) -> tuple[Path, Path]:
    """Write the HTML report to ``out`` and the Markdown leaderboard beside it (``.md``); return both paths.

    ``paper`` adds the paper's published rows (``PUBLISHED``) to the leaderboard, labelled ``(paper)``.
    """
    if names is not None and len(names) != len(save_dirs):
        raise ValueError("names must match save_dirs one to one")
    summaries = [
        collect(d, names[i] if names else None, protocol, judge_model) for i, d in enumerate(save_dirs)
    ]
    rows = {str(r["id"]): dict(r) for r in bench_rows or ()}
    markdown = leaderboard_markdown(summaries, protocol, paper)
    warning = settings_warning(summaries)
    if warning:
        logger.warning(warning)
        markdown = f"{warning}\n\n{markdown}"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>
<body><h1>{html.escape(title)}</h1>
<h2>Leaderboard</h2>
<p>Judge columns: macro mean over themes (1-5, dimensions capped at Instruction Compliance). Metric columns:
judge-free metrics (0-1, higher is better; BgDyn higher = livelier background).</p>
{f"<p><strong>{html.escape(warning)}</strong></p>" if warning else ""}
{_leaderboard_html(summaries, protocol, paper)}
<h2>Per theme</h2>
{_charts(summaries)}
<h2>Samples</h2>
{_samples(summaries, rows, protocol, max_samples)}
</body></html>
"""
    out_path = Path(out)
    md_path = out_path.with_suffix(".md")
    safe_write.write_text(out_path, doc, out_path.parent)  # whole or not at all
    safe_write.write_text(md_path, markdown, out_path.parent)
    return out_path, md_path
