"""Run an editor over Sparkle-Bench and write the official result layout.

Each output is written to a temporary name and renamed, so a killed run or a full disk leaves no
half-written mp4 under the official name; a result path that a symlink leads out of the folder is
refused, and a write error (a full disk) stops the run in one line instead of failing every sample.
Finished ids are skipped on the next run (resume), and ``rank``/``num_ranks`` split the work
deterministically so several processes or GPUs can share one result folder.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..data.video import write_video
from ..errors import check_error_mode
from ..safe_write import SparkleWriteError, inside, os_errors
from .editors import Editor, to_uint8_frames
from .results import result_relpath

logger = logging.getLogger("sparkle_video.bench")

#: Official inference settings: results are saved at 15 fps.
OFFICIAL_FPS = 15.0


@dataclass
class InferenceReport:
    """What one runner call did, by id: written, already there, failed (with the reason)."""

    written: list[str] = field(default_factory=list)
    skipped_existing: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    other_ranks: int = 0

    def summary(self) -> str:
        lines = [
            f"{len(self.written)} written, {len(self.skipped_existing)} already done, "
            f"{len(self.failed)} failed, {self.other_ranks} left to other ranks"
        ]
        lines += [f"  failed {sid}: {reason}" for sid, reason in self.failed]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "skipped_existing": self.skipped_existing,
            "failed": [{"id": s, "reason": r} for s, r in self.failed],
            "other_ranks": self.other_ranks,
        }


def shard_rows(
    rows: Iterable[Mapping[str, Any]], rank: int = 0, num_ranks: int = 1
) -> tuple[list[dict], int]:
    """This rank's rows (round-robin over rows sorted by theme and id) and how many went elsewhere."""
    if num_ranks < 1 or not 0 <= rank < num_ranks:
        raise ValueError(f"need 0 <= rank < num_ranks, got rank={rank}, num_ranks={num_ranks}")
    ordered = sorted((dict(r) for r in rows), key=lambda r: (str(r.get("theme")), str(r["id"])))
    mine = ordered[rank::num_ranks]
    return mine, len(ordered) - len(mine)


def remove_stale_partials(target: Path) -> None:
    """Delete temporary files a killed earlier run left beside ``target``."""
    if target.parent.is_dir():
        for stale in target.parent.glob(f"{target.name}.partial-*"):
            stale.unlink(missing_ok=True)


def run_inference(
    rows: Iterable[Mapping[str, Any]],
    editor: Editor,
    save_dir: str | os.PathLike,
    *,
    rank: int = 0,
    num_ranks: int = 1,
    fps: float = OFFICIAL_FPS,
    crf: int = 18,
    overwrite: bool = False,
    errors: str = "skip",
    progress: bool = True,
) -> InferenceReport:
    """Edit every bench row of this rank with ``editor`` and save ``{theme}/{subtheme}---{scene_key}/{id}_edited.mp4``.

    Args:
        rows: bench rows (``load_sparkle_bench`` output or dicts with ``id, theme, prompt, subtheme,
            scene, source_video``).
        editor: ``(VideoReader, prompt) -> (T, H, W, 3)`` frames, uint8 or float in [0, 1].
        overwrite: redo ids whose result already exists (default: skip them, i.e. resume).
        errors: ``"skip"`` records a failing sample and goes on; ``"raise"`` stops at the first failure.
    """
    check_error_mode(errors)
    root = Path(save_dir)
    with os_errors(root):
        root.mkdir(parents=True, exist_ok=True)
    mine, other = shard_rows(rows, rank, num_ranks)
    report = InferenceReport(other_ranks=other)
    bar = tqdm(mine, desc=f"bench infer (rank {rank}/{num_ranks})", unit="video", disable=not progress)
    for row in bar:
        sid = str(row["id"])
        try:
            target = inside(root, root / result_relpath(row))  # a linked-out theme folder is refused
            remove_stale_partials(target)
            if target.is_file() and target.stat().st_size > 0 and not overwrite:
                report.skipped_existing.append(sid)
                continue
            frames = to_uint8_frames(editor(row["source_video"], str(row["prompt"])))
            write_video(frames, target, fps=fps, crf=crf)
        except SparkleWriteError:  # a full disk or a link out of the folder: every sample would fail
            raise
        except Exception as e:  # one bad sample must not lose the others
            if errors == "raise":
                raise
            reason = f"{type(e).__name__}: {e}"
            logger.warning("bench infer: %s failed: %s", sid, reason)
            report.failed.append((sid, reason))
            continue
        report.written.append(sid)
        bar.set_postfix(written=len(report.written), failed=len(report.failed))
    return report
