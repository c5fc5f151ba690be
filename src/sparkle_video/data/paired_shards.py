"""Paired webdataset shards: ``{theme}-NNNNN.tar`` holding ``{id}.json``, ``{id}.source.mp4``, ``{id}.edited.mp4``.

The official shards split a pair over two tars (source and edited) and keep the text in ``prompts/``;
plain readers (``datasets.load_dataset("webdataset")``, the ``webdataset`` library) group members by the
name before the first dot, so they need both videos and the text of a sample in one tar. These shards are
self-contained: the ``{id}.json`` member carries the prompt CSV row, the metadata JSONL row and, when
the packed folder has them, the sample's stage scores. ``load_sparkle`` reads them too.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from typing import Any

from ..errors import SkipReport, SparkleDataError, handle
from .layout import TRAIN_CSV_COLUMNS
from .records import SampleEntry, csv_quoting, join_train
from .shards import scan_tar
from .sources import DataRoot

PAIRED_SHARD_RE = re.compile(r"^(?P<theme>[a-z0-9]+)-(?P<part>\d{5})\.tar$")
#: Member suffixes of one sample, in the order they are written.
PAIRED_SUFFIXES = (".json", ".source.mp4", ".edited.mp4")
#: The largest ``{id}.json`` member read (a prompt, a metadata row and scores are a few KB).
MAX_JSON_MEMBER_BYTES = 1 << 20


def paired_shard_name(theme: str, part: int) -> str:
    return f"{theme}-{part:05d}.tar"


#: Metadata keys every ``{id}.json`` carries (``None`` when the sample has none), so a plain reader that
#: infers one schema from the first rows (``datasets``' webdataset builder) sees the same struct in each.
PAIRED_METADATA_KEYS = ("edit_type", "original_scene", "chosen_keyword")


def paired_sample(row: dict[str, str], metadata: dict[str, Any] | None, scores: dict[str, Any]) -> bytes:
    """The ``{id}.json`` member of one sample: its CSV row's prompt, its metadata row and its scores.

    ``scores`` (stage name -> the score record) is stored as JSON *text*: score records mix ints and
    floats and differ by scorer, which a reader inferring one Arrow schema from the first rows would
    refuse; ``json.loads(row["scores"])`` gives them back unchanged.
    """
    meta = dict(metadata or {})
    record: dict[str, Any] = {
        "id": row["task"],
        "prompt": row["prompt"],
        "metadata": {k: meta.get(k) for k in PAIRED_METADATA_KEYS} | meta,
        "scores": json.dumps(scores, ensure_ascii=False, sort_keys=True),
    }
    return (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")


def paired_shards(root: DataRoot, theme: str) -> list[str]:
    """Repo-relative ``{theme}-NNNNN.tar`` paths at the top of ``root``, in part order."""
    found = []
    for name in root.listdir(""):
        m = PAIRED_SHARD_RE.match(name)
        if m and m["theme"] == theme:
            found.append((int(m["part"]), name))
    return [p for _, p in sorted(found)]


def paired_themes(root: DataRoot, known: Sequence[str]) -> list[str]:
    names = {m["theme"] for name in root.listdir("") if (m := PAIRED_SHARD_RE.match(name))}
    return [t for t in known if t in names]


def read_paired_entries(
    root: DataRoot, theme: str, shards: Sequence[str], errors: str, report: SkipReport
) -> list[SampleEntry]:
    """Index ``shards`` and turn their ``{id}.json`` members into entries whose videos are members.

    The rows go through the same join as ``prompts/{theme}_train.csv`` + its metadata JSONL, so the
    checks (ids, duplicates, missing fields) and the skip reporting are the folder layout's.
    """
    csv_rows: list[dict[str, str]] = []
    meta_lines: list[str] = []
    for shard in shards:
        label = root.uri(shard)
        with root.open(shard, "rb", **({} if root.is_local else {"block_size": 1 << 16})) as f:
            members, damage = scan_tar(f, label)
            if damage is not None:
                handle(damage, errors, report, key=f"shard {label}")
            for name, member in members.items():
                if not name.endswith(".json"):
                    continue
                sid = name[: -len(".json")]
                try:
                    if member.size > MAX_JSON_MEMBER_BYTES:
                        raise SparkleDataError(
                            f"{name} is {member.size} bytes (limit {MAX_JSON_MEMBER_BYTES})", path=label
                        )
                    f.seek(member.offset)
                    record = json.loads(f.read(member.size).decode("utf-8"))
                    if not isinstance(record, dict) or record.get("id") != sid:
                        raise SparkleDataError(f"{name} is not the JSON record of {sid}", path=label)
                    prompt = record.get("prompt")
                    if not isinstance(prompt, str):
                        raise SparkleDataError(f"{name} has no string 'prompt'", path=label)
                except (ValueError, RecursionError) as e:
                    err = (
                        e if isinstance(e, SparkleDataError) else SparkleDataError(f"{name}: {e}", path=label)
                    )
                    handle(err, errors, report, key=sid)
                    continue
                csv_rows.append(
                    {
                        "prompt": prompt,
                        "src_video": f"{sid}.source.mp4",
                        "tgt_video": f"{sid}.edited.mp4",
                        "task": sid,
                    }
                )
                if isinstance(record.get("metadata"), dict):
                    meta = {k: v for k, v in record["metadata"].items() if v is not None}
                    meta_lines.append(json.dumps({"id": sid, "prompt": prompt, "metadata": meta}))
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=list(TRAIN_CSV_COLUMNS), lineterminator="\n", quoting=csv_quoting(csv_rows)
    )
    writer.writeheader()
    writer.writerows(csv_rows)
    where = f"{theme} webdataset shards ({', '.join(root.uri(s) for s in shards)})"
    jsonl = "\n".join(meta_lines) + "\n" if meta_lines else None
    return join_train(theme, buf.getvalue(), where, jsonl, where, errors=errors, report=report)
