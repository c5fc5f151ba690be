"""OpenVE-Bench, read, laid out and judged the way its official scorer does it.

The paper reports OpenVE-Bench's background-change numbers beside Sparkle-Bench's, and they come from a
different scorer (Kiwi-Edit's ``eval_openve_gemini.py``), so this module reproduces that one rather than
reusing the Sparkle-Bench rules:

* the bench is one CSV, ``benchmark_videos.csv`` (``edited_type, prompt, original_video``); the
  official script skips ``creative_edit``, ``camera_edit`` and ``subtitle_edit``, and Sparkle's table uses
  ``background_change`` only (the default filter here);
* results are flat: ``{save_dir}/{basename}_edited.mp4``;
* the judge is native Gemini: both videos are uploaded as files, the rubric (instruction filled in) is the
  ``system_instruction``, and the contents are the two files alone (no text turn, no sampling settings);
* a reply line counts when it starts, unstripped, with ``"<Dimension Name>:"``; scores are stored in the
  order [Instruction Compliance, Visual Quality & Stability, Consistency & Detail Fidelity], with no cap in
  code; 3 attempts per sample;
* records ``{"scores", "prompt", "edited_type", "result"}`` go to ``{save_dir}/openve_{model}_score.jsonl``;
  the reported figure per edited type is the mean of all its scores, and the headline figure the mean
  over edited types.

The official script writes its record file once at the end; here records are appended as they arrive and
a rerun asks only what is missing (records carry no id, so they are matched to bench rows by
``(edited_type, prompt)``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.layout import safe_relpath
from ..data.video import VideoReader
from ..errors import SparkleDataError
from .judge import (
    JudgeConfigError,
    JudgeRun,
    RecordWriter,
    _ask_with_retries,
    _Cancelled,
    ask_pending,
    check_readable,
    finish_run,
    judge_settings,
    note_truncation,
    retry_options,
    start_run,
    summarize,
)
from .judge_http import JudgeStopped, classify_failure
from .results import ResultEntry
from .rubric import OPENVE

logger = logging.getLogger("sparkle_video.bench")

OPENVE_CSV = "benchmark_videos.csv"
#: Edited types the official scorer never judges.
OFFICIAL_SKIPPED_TYPES = ("creative_edit", "camera_edit", "subtitle_edit")
#: The subset behind Sparkle's OpenVE-Bench table.
DEFAULT_EDITED_TYPES = ("background_change",)
OPENVE_MAX_ATTEMPTS = 3
#: Seconds between polls of an uploaded file that is still ``PROCESSING`` (as the official script).
FILE_POLL_S = 2.0


def openve_csv(bench: str | os.PathLike) -> Path:
    """The bench CSV: ``bench`` itself, ``bench/benchmark_videos.csv`` or, for the official checkout's
    ``benchmark/`` folder, ``bench/OpenVE-Bench/benchmark_videos.csv``."""
    p = Path(bench)
    if not p.is_dir():
        return p
    nested = p / "OpenVE-Bench" / OPENVE_CSV
    return nested if not (p / OPENVE_CSV).is_file() and nested.is_file() else p / OPENVE_CSV


def is_openve_bench(bench: str | os.PathLike) -> bool:
    """Whether ``bench`` names an OpenVE-Bench CSV or a folder holding one (detection by file name)."""
    p = openve_csv(bench)
    return p.name == OPENVE_CSV and p.is_file()


def openve_result_name(original_video: str) -> str:
    """Official flat result name: the source's basename with ``.mp4`` -> ``_edited.mp4``."""
    return original_video.split("/")[-1].replace(".mp4", "_edited.mp4")


def openve_record_name(judge_model: str) -> str:
    """Official record file name ``openve_{model}_score.jsonl`` (``/`` in model names becomes ``_``)."""
    return f"openve_{judge_model.replace('/', '_')}_score.jsonl"


def resolve_source(csv_path: Path, original_video: str) -> Path:
    """Where a row's source video is: beside the CSV, or (the official layout, where the CSV sits in
    ``benchmark/OpenVE-Bench/`` and paths start at ``benchmark/``) one folder up."""
    rel = safe_relpath(original_video)
    here = csv_path.parent / rel
    return here if here.is_file() else csv_path.parent.parent / rel


def load_openve_bench(
    bench: str | os.PathLike,
    edited_types: Sequence[str] | None = DEFAULT_EDITED_TYPES,
    limit: int | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Bench rows of the selected edited types (``None``: every type the official scorer judges) and
    the rows that had to be skipped, named with the reason.

    Each row: ``id`` (source basename without ``.mp4``), ``theme`` = ``edited_type``, ``prompt``,
    ``original_video``, ``source_video`` (a lazy :class:`VideoReader`) and ``result_relpath``.
    """
    path = openve_csv(bench)
    if not path.is_file():
        raise SparkleDataError(f"no {OPENVE_CSV} here", path=str(path))
    wanted = set(edited_types) if edited_types else None
    rows: list[dict[str, Any]] = []
    skipped: list[tuple[str, str]] = []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"edited_type", "prompt", "original_video"} - set(reader.fieldnames or ())
        if missing:
            raise SparkleDataError(f"CSV lacks columns {sorted(missing)}", path=str(path))
        for n, rec in enumerate(reader, start=2):
            kind = rec["edited_type"]
            if kind in OFFICIAL_SKIPPED_TYPES or (wanted is not None and kind not in wanted):
                continue
            original = rec["original_video"] or ""
            try:
                source = resolve_source(path, original)
            except ValueError as e:
                skipped.append((f"line {n}", str(e)))
                continue
            name = openve_result_name(original)
            rows.append(
                {
                    "id": name[: -len("_edited.mp4")] if name.endswith("_edited.mp4") else name,
                    "theme": kind,
                    "edited_type": kind,
                    "prompt": rec["prompt"],
                    "original_video": original,
                    "source_video": VideoReader(str(source)),
                    "result_relpath": name,
                    "subtheme": None,
                    "scene": None,
                }
            )
            if limit is not None and len(rows) >= limit:
                break
    return rows, skipped


def read_openve_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Valid records of an OpenVE score file and the number of unusable lines."""
    out: list[dict[str, Any]] = []
    bad = 0
    if not path.is_file():
        return out, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec["scores"], list) or len(rec["scores"]) != len(OPENVE.dimensions):
                    raise ValueError("wrong number of scores")
                str(rec["edited_type"]), str(rec["prompt"])
                out.append(rec)
            except (ValueError, KeyError, TypeError):
                bad += 1
    return out, bad


def openve_average(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The official figures: per edited type the mean of all its scores, and their mean over types."""
    total: dict[str, int] = Counter()
    count: dict[str, int] = Counter()
    for rec in records:
        kind, scores = rec.get("edited_type"), rec.get("scores") or []
        if kind and scores:
            total[kind] += sum(scores)
            count[kind] += len(scores)
    per_type = {k: total[k] / count[k] for k in total if count[k] > 0}
    return {"per_edited_type": per_type, "all": sum(per_type.values()) / len(per_type) if per_type else None}


class _FilesBackend:
    """Adapts a :class:`~sparkle_video.bench.judge.GeminiJudge` to the retry loop for one sample: the
    videos are uploaded once, then each attempt asks with the rubric as system instruction."""

    def __init__(self, judge: Any, files: list[Any]):
        self.judge, self.files, self.model = judge, files, judge.model

    def ask(self, text: str, videos: Sequence[Any]) -> str:
        return self.judge.ask_with_files(text, self.files)


def _judge_openve_one(
    entry: ResultEntry, backend: Any, rubric: str | None, retry: dict[str, Any], poll: Callable[[float], None]
) -> dict[str, Any]:
    check_readable(entry)
    source = entry.row["source_video"]
    stop = retry.get("stop")
    if stop is not None and stop.is_set():
        raise _Cancelled("the run was stopped")
    try:
        files = backend.upload([source.source, str(entry.path)], sleep=poll)
    except Exception as e:  # a bad key or unknown endpoint shows first here: stop the run as for asks
        failure = classify_failure(e)
        if failure.action == "stop":
            if stop is not None:
                stop.set()
            raise JudgeStopped(failure.message) from None
        raise RuntimeError(f"upload failed: {failure.message}") from None
    prompt = str(entry.row["prompt"])
    system = OPENVE.build_prompt(prompt, rubric)
    scores, reply = _ask_with_retries(_FilesBackend(backend, files), OPENVE, system, [], **retry)
    record: dict[str, Any] = {"scores": scores, "prompt": prompt, "edited_type": entry.theme, "result": reply}
    return note_truncation(record, entry)


def judge_openve(
    rows: Iterable[Mapping[str, Any]],
    save_dir: str | os.PathLike,
    backend: Any,
    *,
    judge_model: str | None = None,
    rubric: str | None = None,
    parse: str = "official",
    concurrency: int = 8,
    max_attempts: int = OPENVE_MAX_ATTEMPTS,
    backoff_s: float = 2.0,
    backoff_max_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
) -> JudgeRun:
    """Judge an OpenVE-Bench result folder with a Gemini backend (file upload + system instruction).

    Resumable like :func:`~sparkle_video.bench.judge.judge_results`; the summary holds the official
    figures under ``openve``, per-dimension means per edited type, and ``judge_settings``.
    """
    if not hasattr(backend, "upload") or not hasattr(backend, "ask_with_files"):
        raise JudgeConfigError(
            "OpenVE-Bench is judged by native Gemini with uploaded files: use --backend gemini"
        )
    retry = retry_options(parse, concurrency, max_attempts, backoff_s, backoff_max_s, sleep)
    model = judge_model or backend.model
    root = Path(save_dir)
    settings = judge_settings(OPENVE, parse, rubric)
    run, results = start_run([dict(r) for r in rows], root, model, OPENVE, settings)
    path = root / openve_record_name(model)
    run.record_files = {"openve": path}
    existing, run.corrupt_lines = read_openve_records(path)
    available = Counter((str(r["edited_type"]), str(r["prompt"])) for r in existing)
    pending = []
    for entry in results.entries:
        key = (entry.theme, str(entry.row["prompt"]))
        if available[key] > 0:
            available[key] -= 1
            run.reused += 1
        else:
            pending.append(entry)
    writer = RecordWriter(ensure_ascii=True)  # the official file is written with json.dumps defaults
    new: list[dict[str, Any]] = []

    def keep(entry: ResultEntry, record: dict[str, Any]) -> None:
        writer.append(path, record)
        new.append(record)
        if isinstance(record.get("truncated"), dict):
            t = record["truncated"]
            run.truncated.append((entry.id, t["source_frames"], t["edited_frames"]))

    ask_pending(
        run,
        pending,
        lambda e: _judge_openve_one(e, backend, rubric, retry, sleep),
        keep,
        concurrency=concurrency,
        progress=progress,
    )
    records = existing + new
    run.truncated.sort()
    summary = summarize([{**r, "edit_type": r["edited_type"]} for r in records], OPENVE)
    return finish_run(run, {**summary, "openve": openve_average(records)}, settings)
