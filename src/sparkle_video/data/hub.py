"""Hub planning: which files of a Sparkle repo a selection needs, fetched at one pinned commit.

A load from a repo id resolves the revision to a commit once, reads the tree listing once, downloads
the prompt/metadata files first, and only then picks the videos (or shards) the selection needs, all at
that commit. With ``HF_HUB_OFFLINE=1``, or when the Hub cannot be reached, the same steps run against
the local cache (as ``datasets`` does), saying so in one log line. The bytes themselves move through
``transport``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..errors import SkipReport
from .catalog import LoadOptions, filter_entries, read_entries, select_themes
from .layout import (
    BENCH_THEMES,
    SHARD_RE,
    THEMES,
    bench_csv_path,
    bench_metadata_path,
    bench_ref_image_path,
    intermediate_jsonl_path,
    train_csv_path,
    train_metadata_path,
)
from .shards import index_tar
from .sources import DataRoot
from .transport import (
    DOWNLOAD_WORKERS,
    HubRepo,
    download_files,
    download_index,
    first_member,
    resolve_repo,
)

logger = logging.getLogger("sparkle_video")

T = TypeVar("T")


# -- files ----------------------------------------------------------------------------------------
def index_patterns(bench: bool, themes: Sequence[str], min_scores: Sequence[str] = ()) -> list[str]:
    """The small files a selection is computed from: prompt CSVs, metadata JSONLs, score JSONLs."""
    out: list[str] = []
    for t in themes:
        if bench:
            out += [bench_csv_path(t), bench_metadata_path(t)]
        else:
            out += [train_csv_path(t), train_metadata_path(t)]
            out += [intermediate_jsonl_path(t, name) for name in min_scores]
    return out


# -- shard selection ------------------------------------------------------------------------------
def theme_shards(files: Sequence[str], theme: str, kind: str) -> list[str]:
    found = []
    for path in files:
        m = SHARD_RE.match(path)
        if m and m["theme"] == theme and m["kind"] == kind:
            found.append((int(m["part"]), path))
    return [p for _, p in sorted(found)]


def shards_for(members: Sequence[str], shards: Sequence[str], firsts: Sequence[str | None]) -> list[str]:
    """The shards that hold ``members``, given each shard's first member.

    Official shards are packed in id order, so shard ``k`` holds the names from its first member up to
    the next shard's first member. The caller checks the result and falls back to every shard.
    """
    picked: set[int] = set()
    starts = [(name, k) for k, name in enumerate(firsts) if name is not None]
    for member in members:
        owner = None
        for name, k in starts:
            if name <= member:
                owner = k
        if owner is not None:
            picked.add(owner)
    return [shards[k] for k in sorted(picked)]


# -- the non-streaming path -----------------------------------------------------------------------
def _parallel(fn: Callable[[str], T], items: Sequence[str]) -> list[T]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
        return list(pool.map(fn, items))


def select_entries(root: Any, options: Any, limit: int | None) -> dict[str, list[Any]]:
    """``theme -> entries`` after the same filters the builders apply (and ``limit``, in index order)."""
    chosen: dict[str, list[Any]] = {}
    left = limit
    for theme in select_themes(root, options):
        entries = filter_entries(root, theme, read_entries(root, theme, options, SkipReport()), options)
        if left is not None:
            entries = entries[:left]
            left -= len(entries)
        chosen[theme] = entries
    return chosen


def select_ids(root: Any, options: Any, limit: int | None) -> list[str]:
    return [e.id for entries in select_entries(root, options, limit).values() for e in entries]


def use_shards(files: dict[str, int], theme: str, layout: str) -> bool:
    if layout == "shards":
        return True
    return layout == "auto" and bool(theme_shards(list(files), theme, "source"))


def prepare_snapshot(repo: HubRepo, options: Any, limit: int | None) -> tuple[str, list[str] | None]:
    """Download what ``options`` (and ``limit``) select; return the local folder and, when ``limit``
    narrowed the selection, the ids kept (the loader then reads only those).
    """
    wanted = list(options.themes) if options.themes else list(BENCH_THEMES if options.bench else THEMES)
    folder = download_index(repo, index_patterns(options.bench, wanted, list(options.min_scores)))
    root = DataRoot(folder)
    chosen = select_entries(root, options, limit)
    narrowed = bool(options.ids or options.subthemes or options.min_scores or limit is not None)
    needed: list[str] = []
    for theme, entries in chosen.items():
        if options.bench:
            for e in entries:
                needed.append(e.source_path)
                ref = bench_ref_image_path(theme, e.id)
                if ref in repo.files:
                    needed.append(ref)
        elif use_shards(repo.files, theme, options.layout):
            needed += _needed_shards(repo, root, theme, entries, narrowed)
        else:
            needed += [p for e in entries for p in (e.source_path, e.edited_path) if p]
    needed = [p for p in dict.fromkeys(needed) if p in repo.files]  # absent ones are reported by the loader
    download_files(repo, needed)
    if not options.bench and narrowed:
        _check_shard_choice(repo, root, chosen, options.layout)
    ids = [e.id for entries in chosen.values() for e in entries] if limit is not None else None
    return folder, ids


def _needed_shards(repo: HubRepo, root: Any, theme: str, entries: Sequence[Any], narrowed: bool) -> list[str]:
    """All of a theme's shards, or (for a narrowed selection) those that hold its members: online
    judged from each shard's first member, offline the ones already cached (checked afterwards)."""
    out = []
    for kind in ("source", "edited"):
        shards = theme_shards(list(repo.files), theme, kind)
        members = sorted(e.source_path if kind == "source" else e.edited_path for e in entries)
        if not narrowed:
            out += shards
        elif not members:
            continue
        elif len(shards) <= 1:
            out += shards
        elif repo.offline:
            out += [s for s in shards if root.exists(s)]
        else:
            out += shards_for(members, shards, _parallel(lambda s: first_member(repo, s), shards))
    return out


def _check_shard_choice(repo: HubRepo, root: Any, chosen: dict[str, list[Any]], layout: str) -> None:
    """If a selected member is in none of the shards fetched (shards not in id order), fetch the rest."""
    for theme, entries in chosen.items():
        if not use_shards(repo.files, theme, layout) or not entries:
            continue
        for kind in ("source", "edited"):
            shards = theme_shards(list(repo.files), theme, kind)
            have = [s for s in shards if root.exists(s)]
            names: set[str] = set()
            for s in have:
                with root.open(s, "rb") as f:
                    names.update(index_tar(f, root.uri(s)))
            members = {e.source_path if kind == "source" else e.edited_path for e in entries}
            if members - names and len(have) < len(shards):
                logger.info("%s %s shards are not in id order: fetching all %d", theme, kind, len(shards))
                download_files(repo, shards)


def index_entries(
    repo_id: str,
    *,
    bench: bool,
    themes: Sequence[str] | None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
) -> list[Any]:
    """Every sample entry of a repo, read from its prompt/metadata files only (no video is fetched)."""
    options = LoadOptions(bench=bench, themes=tuple(themes) if themes else None)
    repo = resolve_repo(repo_id, revision, token, cache_dir)
    wanted = list(options.themes) if options.themes else list(BENCH_THEMES if bench else THEMES)
    folder = download_index(repo, index_patterns(bench, wanted))
    chosen = select_entries(DataRoot(folder), options, None)
    return [e for entries in chosen.values() for e in entries]
