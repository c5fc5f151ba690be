"""Parsing the prompt CSVs and metadata JSONLs into one index entry per sample.

Pure functions over text: they name the file and row of every problem, and under ``errors="skip"``
record it in a ``SkipReport`` instead of raising. No video is touched here.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import SkipReport, SparkleDataError, handle
from .layout import BENCH_CSV_COLUMNS, TRAIN_CSV_COLUMNS, parse_chosen_keyword, safe_relpath


@dataclass
class SampleEntry:
    """One sample's text fields and the repo-relative paths of its files."""

    id: str
    theme: str
    prompt: str
    subtheme: str | None
    scene: str | None
    original_scene: str | None
    edit_type: str | None
    source_path: str
    edited_path: str | None = None
    ref_image_path: str | None = None

    def text_fields(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "theme": self.theme,
            "prompt": self.prompt,
            "subtheme": self.subtheme,
            "scene": self.scene,
            "original_scene": self.original_scene,
        }


def csv_quoting(rows: Sequence[dict[str, Any]]) -> int:
    """``csv.QUOTE_ALL`` when a value holds ``\r``, else ``QUOTE_MINIMAL``.

    With ``lineterminator="\n"`` the csv module quotes a field holding ``\n`` but not one holding a
    lone ``\r``, which a reader then refuses ("new-line character seen in unquoted field").
    """
    carriage = any("\r" in str(v) for row in rows for v in row.values() if v is not None)
    return csv.QUOTE_ALL if carriage else csv.QUOTE_MINIMAL


def read_csv_rows(text: str, path: str, required: Sequence[str]) -> list[dict[str, str]]:
    """CSV rows as dicts; a missing required column is always an error (the whole file is unusable)."""
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    missing = [c for c in required if c not in columns]
    if missing:
        raise SparkleDataError(f"CSV lacks columns {missing} (has {columns})", path=path)
    return list(reader)


def jsonl_lines(text: str) -> list[str]:
    """A JSONL file's lines, split on ``\n`` only.

    ``str.splitlines`` also splits on U+2028, U+0085 and other separators that JSON strings may hold
    raw (``json.dumps(..., ensure_ascii=False)`` writes them), which would cut a record in two.
    """
    lines = text.split("\n")
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_json_line(line: str) -> object:
    """``json.loads`` whose failures are all ``ValueError``: absurd nesting is a bad line, not a crash."""
    try:
        return json.loads(line)
    except RecursionError as e:
        raise ValueError(f"nested too deeply to parse ({len(line)} characters)") from e


def read_jsonl(
    text: str,
    path: str,
    errors: str = "raise",
    report: SkipReport | None = None,
    conflicts: set[str] | None = None,
) -> dict[str, dict]:
    """``id -> record`` for a JSONL file; broken lines name their line number.

    An id on two lines with different content is an error (no line may silently win); under
    ``errors="skip"`` the id is reported once, left out of the result and added to ``conflicts``.
    A line repeated verbatim changes nothing and is accepted.
    """
    records: dict[str, dict] = {}
    first_line: dict[str, int] = {}
    bad: set[str] = set()
    for lineno, line in enumerate(jsonl_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = parse_json_line(line)
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise ValueError("record is not an object with a string 'id'")
        except ValueError as e:
            err = SparkleDataError(f"broken JSONL line {lineno} ({e})", path=path)
            handle(err, errors, report, key=f"{path}:{lineno}")
            continue
        sid = record["id"]
        if sid in bad:
            continue
        if sid in records and records[sid] != record:
            err = SparkleDataError(
                f"id repeated with different content on JSONL lines {first_line[sid]} and {lineno}",
                path=path,
                sample_id=sid,
            )
            handle(err, errors, report, key=sid)
            bad.add(sid)
            del records[sid]
            continue
        records.setdefault(sid, record)
        first_line.setdefault(sid, lineno)
    if conflicts is not None:
        conflicts.update(bad)
    return records


def _keyword_fields(meta: dict, path: str, sid: str) -> tuple[str | None, str | None]:
    try:
        kw = parse_chosen_keyword(meta.get("chosen_keyword"))
    except ValueError as e:
        raise SparkleDataError(str(e), path=path, sample_id=sid) from e
    return (kw.subtheme, kw.scene) if kw else (None, None)


RowPaths = Callable[[int, dict[str, str]], tuple[str, dict[str, str | None]]]


def _join(
    theme: str,
    rows: list[dict[str, str]],
    csv_path: str,
    meta: dict[str, dict] | None,
    jsonl_path: str,
    row_paths: RowPaths,
    errors: str,
    report: SkipReport | None,
    reported: set[str] | frozenset[str] = frozenset(),
) -> list[SampleEntry]:
    """Join CSV rows with metadata records by id; ``row_paths`` reads a row's id and file paths.

    ``reported`` ids were already skipped (and reported) while reading the JSONL: their rows are left out
    without a second report.
    """
    entries: list[SampleEntry] = []
    seen: set[str] = set()
    for rowno, row in enumerate(rows, start=2):
        sid = ""
        try:
            sid, paths = row_paths(rowno, row)
            if sid in seen:
                raise SparkleDataError(f"row {rowno} repeats id", path=csv_path, sample_id=sid)
            if sid in reported:
                seen.add(sid)
                continue
            record = meta.get(sid) if meta is not None else {}
            if record is None:
                raise SparkleDataError(
                    f"id in {posixpath.basename(csv_path)} but not in the metadata JSONL",
                    path=jsonl_path,
                    sample_id=sid,
                )
            metadata = record.get("metadata") or {}
            subtheme, scene = _keyword_fields(metadata, jsonl_path, sid)
            entries.append(
                SampleEntry(
                    id=sid,
                    theme=theme,
                    prompt=row.get("prompt") or record.get("prompt") or "",
                    subtheme=subtheme,
                    scene=scene,
                    original_scene=metadata.get("original_scene"),
                    edit_type=row.get("edited_type") or metadata.get("edit_type") or theme,
                    **paths,  # type: ignore[arg-type]
                )
            )
        except SparkleDataError as err:
            sid = sid or err.sample_id or ""
            handle(err, errors, report, key=sid or f"{csv_path}:{rowno}")
        seen.add(sid)
    if meta is not None:
        for sid in sorted(set(meta) - seen):
            err = SparkleDataError(
                "id in the metadata JSONL but not in the CSV", path=csv_path, sample_id=sid
            )
            handle(err, errors, report, key=sid)
    return entries


def _safe(path: str, rowno: int, csv_path: str, sid: str | None) -> str:
    try:
        return safe_relpath(path)
    except ValueError as e:
        raise SparkleDataError(f"row {rowno}: {e}", path=csv_path, sample_id=sid or None) from e


def join_train(
    theme: str,
    csv_text: str,
    csv_path: str,
    jsonl_text: str | None,
    jsonl_path: str,
    errors: str = "raise",
    report: SkipReport | None = None,
) -> list[SampleEntry]:
    """Join a theme's ``prompts/{theme}_train.csv`` with its metadata JSONL, by ``task`` == ``id``."""
    rows = read_csv_rows(csv_text, csv_path, TRAIN_CSV_COLUMNS)
    conflicts: set[str] = set()
    meta = read_jsonl(jsonl_text, jsonl_path, errors, report, conflicts) if jsonl_text is not None else None

    def row_paths(rowno: int, row: dict[str, str]) -> tuple[str, dict[str, str | None]]:
        sid = (row.get("task") or "").strip()
        if not sid:
            raise SparkleDataError(f"row {rowno} has an empty 'task'", path=csv_path)
        return sid, {
            "source_path": _safe(row["src_video"], rowno, csv_path, sid),
            "edited_path": _safe(row["tgt_video"], rowno, csv_path, sid),
        }

    return _join(theme, rows, csv_path, meta, jsonl_path, row_paths, errors, report, conflicts)


def join_bench(
    theme: str,
    csv_text: str,
    csv_path: str,
    jsonl_text: str | None,
    jsonl_path: str,
    ref_images: Iterable[str] = (),
    errors: str = "raise",
    report: SkipReport | None = None,
) -> list[SampleEntry]:
    """Join a bench theme's ``{theme}_bench.csv`` with ``{theme}_metadata.jsonl`` (id = video basename)."""
    rows = read_csv_rows(csv_text, csv_path, BENCH_CSV_COLUMNS)
    conflicts: set[str] = set()
    meta = read_jsonl(jsonl_text, jsonl_path, errors, report, conflicts) if jsonl_text is not None else None
    refs = set(ref_images)

    def row_paths(rowno: int, row: dict[str, str]) -> tuple[str, dict[str, str | None]]:
        raw = (row.get("original_video") or "").strip()
        sid = posixpath.splitext(posixpath.basename(raw))[0]
        ref = f"ref_images/{theme}/{sid}.png"
        return sid, {
            "source_path": _safe(raw, rowno, csv_path, sid),
            "ref_image_path": ref if ref in refs else None,
        }

    return _join(theme, rows, csv_path, meta, jsonl_path, row_paths, errors, report, conflicts)


def stage_score(record: dict, field: str) -> float | None:
    """The thresholded value of a stage score record: ``editscore[field]``, or the mean over frames."""
    score = record.get("editscore")
    if isinstance(score, dict):
        value = score.get(field)
        return float(value) if isinstance(value, (int, float)) else None
    if isinstance(score, list):
        values = [s.get(field) for s in score if isinstance(s, dict)]
        values = [float(v) for v in values if isinstance(v, (int, float))]
        return sum(values) / len(values) if values else None
    return None
