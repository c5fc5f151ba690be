"""A result set on disk: where each bench id's edited video lives, and what is missing or misplaced.

The official layout is ``{save_dir}/{theme}/{subtheme}---{scene_key}/{id}_edited.mp4``. The judge, the
metrics scorer and the report all resolve results through :func:`scan_results`, so they count missing
and unexpected files the same way (and the same way as the official scorer: missing edited video,
missing source video, missing metadata).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.layout import BENCH_THEMES, bench_result_path, safe_relpath
from ..errors import SparkleDataError

logger = logging.getLogger("sparkle_video.bench")

EDITED_SUFFIX = "_edited.mp4"


def result_relpath(row: Mapping[str, Any]) -> str:
    """The official relative result path of a bench row; ``SparkleDataError`` without a keyword.

    Rows that carry their own ``result_relpath`` (OpenVE-Bench's flat ``{basename}_edited.mp4``) use it.
    """
    own = row.get("result_relpath")
    if own:
        try:
            return safe_relpath(str(own))
        except ValueError as e:
            raise SparkleDataError(str(e), sample_id=str(row.get("id"))) from None
    theme, subtheme, scene = row.get("theme"), row.get("subtheme"), row.get("scene")
    if not theme or not subtheme or not scene:
        raise SparkleDataError(
            "bench row has no subtheme/scene (metadata missing), so it has no result path",
            sample_id=str(row.get("id")),
        )
    return bench_result_path(str(theme), str(subtheme), str(scene), str(row["id"]))


def source_exists(row: Mapping[str, Any]) -> bool:
    """Whether the row's source video is there (local paths are checked; other sources are trusted)."""
    video = row.get("source_video")
    if video is None:
        return False
    src = getattr(video, "source", None)
    if isinstance(src, str) and "://" not in src:
        return os.path.isfile(src) and os.path.getsize(src) > 0
    return True


@dataclass
class ResultEntry:
    """One bench sample with its edited video found in the result set."""

    row: dict[str, Any]
    path: Path

    @property
    def id(self) -> str:
        return str(self.row["id"])

    @property
    def theme(self) -> str:
        return str(self.row["theme"])


@dataclass
class ResultSet:
    """The samples of one result folder: found, and named lists of everything that is not usable."""

    save_dir: Path
    entries: list[ResultEntry] = field(default_factory=list)
    missing_edited: list[str] = field(default_factory=list)
    missing_source: list[str] = field(default_factory=list)
    missing_metadata: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    #: Result paths that a symlink leads out of ``save_dir`` (not read: they are not this folder's).
    outside: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "found": len(self.entries),
            "missing_edited": len(self.missing_edited),
            "missing_source": len(self.missing_source),
            "missing_metadata": len(self.missing_metadata),
            "unexpected": len(self.unexpected),
            "outside": len(self.outside),
        }

    def problems(self) -> dict[str, list[str]]:
        """Every non-usable sample or file, by kind (for reports: counted *and* named)."""
        return {
            "missing_edited": list(self.missing_edited),
            "missing_source": list(self.missing_source),
            "missing_metadata": list(self.missing_metadata),
            "unexpected": list(self.unexpected),
            "outside": list(self.outside),
        }


def mp4_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a complete MP4 file, or ``None``: a header-only check (no decoding).

    Walks the top-level boxes: the file must start with ``ftyp``, hold a ``moov`` box, and its boxes
    must add up to the file size exactly (a killed writer leaves a short last box).
    """
    try:
        size = os.path.getsize(path)
        seen: list[bytes] = []
        with open(path, "rb") as f:
            pos = 0
            while pos < size:
                f.seek(pos)
                header = f.read(16)
                if len(header) < 8:
                    return f"truncated box header at byte {pos}"
                box_size = int.from_bytes(header[:4], "big")
                kind = header[4:8]
                if pos == 0 and kind != b"ftyp":
                    return "not an MP4 file (no ftyp box first)"
                if box_size == 1:
                    if len(header) < 16:
                        return f"truncated box header at byte {pos}"
                    box_size = int.from_bytes(header[8:16], "big")
                elif box_size == 0:
                    box_size = size - pos
                if box_size < 8 or pos + box_size > size:
                    return f"box {kind!r} at byte {pos} runs past the end of the file (truncated)"
                seen.append(kind)
                pos += box_size
    except OSError as e:
        return f"unreadable ({e})"
    if not seen:
        return "empty file"
    if b"moov" not in seen:
        return "MP4 file has no moov box (incomplete)"
    return None


#: Results are compared over at most this many frames (the official inference cap).
MAX_COMPARED_FRAMES = 81


def frame_counts(entry: ResultEntry, max_frames: int = MAX_COMPARED_FRAMES) -> tuple[int, int] | None:
    """``(source frames, edited frames)`` when the edit is shorter than its source after the
    ``max_frames`` cap (an editor that drops frames is broken even if what it kept looks fine), else
    ``None``. Reads container headers only."""
    from ..data.video import VideoReader, as_video_reader

    source = as_video_reader(entry.row["source_video"])
    n_src = min(source.header_frame_count(), max_frames)
    n_edit = VideoReader(str(entry.path)).header_frame_count()
    return (n_src, n_edit) if n_edit < n_src else None


def leads_inside(root: Path, path: Path) -> bool:
    """Whether ``path`` resolves under ``root`` (a symlinked theme folder or file may lead elsewhere)."""
    base, resolved = root.resolve(), path.resolve()
    return resolved == base or base in resolved.parents


def find_edited_files(save_dir: Path) -> list[str]:
    """Every ``*_edited.mp4`` under ``save_dir``, relative and POSIX-style (symlinked folders are not
    walked into)."""
    out = []
    for dirpath, _, files in os.walk(save_dir):
        for name in files:
            if name.endswith(EDITED_SUFFIX):
                out.append(Path(dirpath, name).relative_to(save_dir).as_posix())
    return sorted(out)


def scan_results(
    save_dir: str | os.PathLike, rows: Iterable[Mapping[str, Any]], *, strict_layout: bool = True
) -> ResultSet:
    """Match bench ``rows`` to edited videos under ``save_dir``.

    Raises ``SparkleDataError`` before any work when ``save_dir`` does not exist, or (``strict_layout``)
    when it holds edited videos but none where the official layout puts them: a wrong layout would
    otherwise score as "everything missing".
    """
    root = Path(save_dir)
    if not root.is_dir():
        raise SparkleDataError("results folder does not exist", path=str(root))
    result = ResultSet(save_dir=root)
    expected: set[str] = set()
    seen_themes: set[str] = set()
    for row in rows:
        row = dict(row)
        sid = str(row["id"])
        seen_themes.add(str(row.get("theme")))
        try:
            rel = result_relpath(row)
        except SparkleDataError:
            result.missing_metadata.append(sid)
            continue
        expected.add(rel)
        path = root / rel
        if not leads_inside(root, path):
            result.outside.append(rel)
            logger.warning("results: %s leads outside %s (to %s): not read", rel, root, path.resolve())
        elif not path.is_file() or path.stat().st_size == 0:
            result.missing_edited.append(sid)
        elif not source_exists(row):
            result.missing_source.append(sid)
        else:
            result.entries.append(ResultEntry(row, path))
    themes = {rel.split("/", 1)[0] for rel in expected} | {str(r) for r in seen_themes}
    flat = bool(expected) and all("/" not in rel for rel in expected)
    if flat:  # OpenVE-Bench: other edited types share the folder; only files in subfolders are misplaced
        result.unexpected = [p for p in find_edited_files(root) if "/" in p]
    else:  # results of bench themes not asked about are someone else's business; the rest is misplaced
        result.unexpected = [
            p
            for p in find_edited_files(root)
            if p not in expected and (p.split("/", 1)[0] in themes or p.split("/", 1)[0] not in BENCH_THEMES)
        ]
    if strict_layout and not result.entries and not result.missing_source and result.unexpected:
        raise SparkleDataError(
            f"results folder holds {len(result.unexpected)} edited videos but none in the official layout "
            f"{{theme}}/{{subtheme}}---{{scene_key}}/{{id}}_edited.mp4 for these bench ids "
            f"(first found: {result.unexpected[0]})",
            path=str(root),
        )
    return result
