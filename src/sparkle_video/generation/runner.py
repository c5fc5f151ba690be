"""One generation run: plan the samples, run the stages with an executor, publish the passing pairs.

The plan is a pure function of the source listing, the themes, the limit and the seed, so a rerun with
the same arguments sees the same ids and resumes from the ledger; a rerun with different arguments is
refused (naming what changed) instead of mixing two runs in one folder.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import safe_write
from ..data.layout import sample_id
from ..data.writer import SampleRecord, write_sparkle
from .backends.registry import BackendConfig, backend_config_from_mapping, load_backend_config
from .ledger import STAGES, format_table, summarise, write_atomic, write_json_atomic
from .steps import PlanItem, Workspace
from .taxonomy import THEMES, check_themes

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")


@dataclass
class RunResult:
    """What a run produced: the published ids, the summary and where everything is."""

    out: str
    published: list[str]
    stats: dict[str, Any]
    table: str
    executor: str = "local"
    plan: list[PlanItem] = field(default_factory=list)


def find_sources(sources: str | os.PathLike) -> tuple[list[Path], list[tuple[str, str]]]:
    """Video files under ``sources`` (a folder, searched recursively, or one file), sorted by path;
    plus the other files found, each with why it was ignored (nothing is skipped silently)."""
    root = Path(sources)
    if root.is_file():
        return [root.resolve()], []
    if not root.is_dir():
        raise ValueError(f"sources not found: {sources}")
    videos, ignored = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix.lower() in VIDEO_EXTENSIONS:
            videos.append(path.resolve())
        elif not path.name.startswith("."):
            ignored.append(
                (str(path.relative_to(root)), f"not a video file ({path.suffix or 'no extension'})")
            )
    return videos, ignored


def make_plan(
    videos: Sequence[Path], themes: Sequence[str] = THEMES, limit: int | None = None
) -> list[PlanItem]:
    """One item per source (in sorted order): a run id from its place in the listing, and the themes
    stage 2 may choose from. The theme and scene are not dealt here: the VLM picks them for each clip's
    first frame, so the plan is a pure function of the listing, the themes and the limit."""
    themes = check_themes(themes)
    chosen = list(videos)[: limit if limit is not None else None]
    return [PlanItem(work_id(i), str(path), ",".join(themes)) for i, path in enumerate(chosen)]


def work_id(index: int) -> str:
    """The run's name for the ``index``-th source: ``clip_000003``."""
    return f"clip_{index:06d}"


def published_id(item: PlanItem, theme: str) -> str:
    """The dataset id of a published pair: ``Sparkle_{theme}_{n}``, ``n`` the clip's place in the
    listing, so an id never changes when other clips pass or fail on a rerun."""
    return sample_id(theme, int(item.id.rsplit("_", 1)[1]))


def user_names(sources: str | os.PathLike, videos: Sequence[Path]) -> dict[str, str]:
    """Each found video (resolved path) -> its name as the user gave it: the ``sources`` argument as
    typed, joined with the file's path under it (a symlinked clip keeps its own name)."""
    root = Path(sources)
    if root.is_file():
        return {str(v): os.fspath(sources) for v in videos}
    wanted = {str(v) for v in videos}
    names = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        resolved = str(path.resolve())
        if resolved in wanted and resolved not in names:
            names[resolved] = os.fspath(root / path.relative_to(root))
    return names


def sample_details(
    ws: Workspace, plan: Sequence[PlanItem], names: dict[str, str], published: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per sample, what ``stats.json`` names it by: the source as given, the chosen theme and keyword
    (once stage 2 ran) and the published id (when it was published)."""
    done = set(published)
    out: dict[str, dict[str, Any]] = {}
    for item in plan:
        entry: dict[str, Any] = {
            "source": names.get(item.source, item.source),
            "theme": "",
            "chosen_keyword": "",
        }
        path = ws.file(item.id, "instruction.json")
        if path.exists():
            info = json.loads(path.read_text("utf-8"))
            entry["theme"], entry["chosen_keyword"] = info.get("theme", ""), info.get("chosen_keyword", "")
        pid = published_id(item, entry["theme"]) if entry["theme"] else ""
        entry["published_id"] = pid if pid in done else ""
        out[item.id] = entry
    return out


def _run_options(
    sources: str, themes: Sequence[str], limit: int | None, config: BackendConfig
) -> dict[str, Any]:
    return {
        "sources": str(Path(sources).resolve()),
        "themes": list(themes),
        "limit": limit,
        "config": config.to_dict(),
    }


def check_resume(work: Path, options: dict[str, Any]) -> None:
    """Refuse to resume a folder made with other arguments; remember the arguments otherwise."""
    path = work / "run.json"
    if path.exists():
        previous = json.loads(path.read_text("utf-8"))
        changed = sorted(k for k in set(previous) | set(options) if previous.get(k) != options.get(k))
        if changed:
            raise ValueError(
                f"{work.parent} holds a run made with different {', '.join(changed)}; "
                "use a new --out folder or the same arguments to resume"
            )
    else:
        write_json_atomic(path, options, work)


def remove_stale_temporaries(work: Path) -> int:
    """Delete temporary files a killed run left behind (a kill cannot clean up); returns how many.

    Called before any worker starts, so no live writer owns them. Finished artefacts are never
    temporaries: they are renamed into place whole.
    """
    stale = [p for p in work.rglob("*") if p.is_file() and (".partial-" in p.name or p.name.endswith(".tmp"))]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.info("removed %d temporary files left by an interrupted run", len(stale))
    return len(stale)


def check_plan(path: Path, plan: Sequence[PlanItem]) -> None:
    """Write the plan, or check that a resumed run planned exactly the same samples.

    Ids follow the sorted source listing, so a clip added to or removed from the folder between runs
    would give finished ids to other clips; that is refused, naming the first difference.
    """
    text = "".join(json.dumps(asdict(p), sort_keys=True) + "\n" for p in plan)
    if path.exists():
        previous = path.read_text("utf-8")
        if previous != text:
            old = [json.loads(line) for line in previous.splitlines()]
            new = [json.loads(line) for line in text.splitlines()]
            diff = next(
                (
                    f"{a.get('id')}: {a.get('source')} -> {b.get('source')}"
                    for a, b in zip(old, new, strict=False)
                    if a != b
                ),
                f"{len(old)} samples planned before, {len(new)} now",
            )
            raise ValueError(f"the sources changed since this run started ({diff}); use a new --out folder")
        return
    write_atomic(path, text.encode("utf-8"), path.parent)


def publish(out: str | Path, plan: Sequence[PlanItem], progress: bool = True) -> list[str]:
    """Write the pairs that passed every stage through the dataset writer, then move them into ``out``.

    The writer fills a scratch folder; each file is then renamed into place, so the published tree
    never holds a half-written file. Deterministic: ids sorted, same bytes for the same work files.
    Returns the published ids (``Sparkle_{theme}_{n}``, see :func:`published_id`).
    """
    ws = Workspace(out)
    records = []
    for item in plan:
        final = ws.ledger.get("final", item.id)
        if final is None or final.status != "passed":
            continue
        f = lambda name, sid=item.id: str(ws.file(sid, name))  # noqa: E731
        info = ws.read_json(item.id, "instruction.json")
        pid = published_id(item, info["theme"])
        named = lambda name, sid=item.id, pid=pid: {**ws.read_json(sid, name), "id": pid}  # noqa: E731
        scores = {
            "edited_frame0_score": named("edited_frame0_score.json"),
            "edited_frame0_foreground_removed_score": named("edited_frame0_foreground_removed_score.json"),
            "edited_video_score": named("edited_video_score.json"),
        }
        records.append(
            SampleRecord(
                id=pid,
                theme=info["theme"],
                prompt=info["prompt"],
                source=f("source.mp4"),
                edited=f("edited.mp4"),
                chosen_keyword=info["chosen_keyword"],
                original_scene=info["original_scene"],
                fps=ws.source_fps(item.id),
                mask=ws.read_mask(item.id, "mask.npz"),
                background=f("background.mp4"),
                canny=f("canny.mp4"),
                source_frame0=f("source_frame0.png"),
                edited_frame0=f("edited_frame0.png"),
                edited_frame0_foreground_removed=f("edited_frame0_foreground_removed.png"),
                grounding_r1=named("grounding_r1.json"),
                grounding_r2=named("grounding_r2.json"),
                scores=scores,
            )
        )
    records.sort(key=lambda r: r.id)
    scratch = ws.work / "publish"
    if scratch.exists():
        shutil.rmtree(scratch)
    if not records:
        return []
    write_sparkle(records, scratch, overwrite=True, progress=progress)
    for path in sorted(p for p in scratch.rglob("*") if p.is_file()):
        safe_write.replace(path, Path(out) / path.relative_to(scratch), out)  # never through a link out
    shutil.rmtree(scratch)
    return [r.id for r in records]


def generate(
    sources: str | os.PathLike,
    out: str | os.PathLike,
    *,
    backends: str | os.PathLike | BackendConfig | dict = "reference",
    executor: str = "local",
    ray_address: str | None = None,
    executor_options: dict[str, Any] | None = None,
    limit: int | None = None,
    themes: Sequence[str] | None = None,
    progress: bool = True,
) -> RunResult:
    """Run the five-stage pipeline on the clips in ``sources`` and write a Sparkle dataset to ``out``.

    ``backends`` is a shipped config name (``"reference"``), a YAML/TOML path, a mapping or a
    :class:`BackendConfig`. ``executor`` is ``"local"`` (default) or ``"ray"`` (``executor_options``:
    ``num_cpus`` of a local Ray, ``concurrency`` = workers per model stage). Interrupt it at any point and call it again with the same arguments: it
    resumes from ``out/_generation/``. ``out/stats.json`` holds the per-stage counts and reasons.
    """
    if isinstance(backends, BackendConfig):
        config = backends
    elif isinstance(backends, dict):
        config = backend_config_from_mapping(backends)
    else:
        config = load_backend_config(backends)
    config.check()
    themes = tuple(themes or THEMES)
    videos, ignored = find_sources(sources)
    plan = make_plan(videos, themes, limit)
    names = user_names(sources, videos)
    ws = Workspace(out)
    ws.work.mkdir(parents=True, exist_ok=True)
    check_resume(ws.work, _run_options(os.fspath(sources), themes, limit, config))
    check_plan(ws.work / "plan.jsonl", plan)
    remove_stale_temporaries(ws.work)
    from .executors import make_executor

    runner = make_executor(executor, ray_address=ray_address, **(executor_options or {}))
    runner.run(plan, out, config, progress=progress)
    published = publish(out, plan, progress=progress)
    details = sample_details(ws, plan, names, published)
    stats = summarise(ws.ledger, [p.id for p in plan], ignored, details)
    stats["themes"] = list(themes)
    stats["stages_order"] = list(STAGES)
    write_json_atomic(Path(out) / "stats.json", stats, out)
    return RunResult(os.fspath(out), published, stats, format_table(stats), executor, plan)


def preview_pair(root: str | os.PathLike, sid: str, out_png: str | os.PathLike, num: int = 3) -> str:
    """A PNG strip of one generated pair: source frames over edited frames (and the mask's outline)."""
    import cv2

    from ..data.video import VideoReader

    root = Path(root)
    theme = sid.split("_")[1]
    src = VideoReader(root / theme / "source_video" / f"{sid}.mp4")
    edt = VideoReader(root / theme / "edited_video" / f"{sid}.mp4")
    idx = np.linspace(0, min(src.num_frames, edt.num_frames) - 1, num).round().astype(int).tolist()
    height = 180
    rows = []
    for reader in (src, edt):
        frames = reader.get_frames(idx)
        width = round(frames.shape[2] * height / frames.shape[1])
        rows.append(
            np.concatenate([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames], 1)
        )
    sheet = np.concatenate(rows, 0)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out_png), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    return str(out_png)
