"""Planning and generating dataset examples from a ``DataRoot``.

This is the engine behind the ``datasets`` builders in ``loaders/``: the builders stay declarative and
call ``plan_units`` from ``_split_generators`` and ``generate_examples`` from ``_generate_examples``.

Video fields are emitted as *references* (``path``/``offset``/``size``/``bytes``), never decoded;
``sparkle_video.data`` turns them into lazy ``VideoReader``s when a row is read.
"""

from __future__ import annotations

import logging
import posixpath
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import SkipReport, SparkleDataError, check_error_mode, handle
from .layout import (
    BENCH_THEMES,
    SCORE_FILES,
    THEMES,
    bench_csv_path,
    bench_metadata_path,
    intermediate_jsonl_path,
    train_csv_path,
    train_metadata_path,
)
from .paired_shards import paired_shards, paired_themes, read_paired_entries
from .records import SampleEntry, join_bench, join_train, read_jsonl, stage_score
from .shards import TarMember, iter_tar, scan_tar
from .sources import DataRoot
from .transport import iter_remote_tar

logger = logging.getLogger("sparkle_video")

VERIFY_MODES = ("none", "size", "metadata")
LAYOUTS = ("auto", "folder", "shards")
#: Rows per work unit for folder layouts (units are what streaming splits across workers and ranks).
FOLDER_UNIT_ROWS = 64
#: Units a folder theme is cut into at least (when it has that many rows).
MIN_FOLDER_UNITS = 8


def empty_ref() -> dict[str, Any]:
    """A file reference: ``path`` (and a byte range in it) or ``bytes``; ``member`` names a tar member."""
    return {"path": None, "offset": 0, "size": -1, "bytes": None, "member": None}


@dataclass
class LoadOptions:
    """Everything that selects and checks samples; shared by both datasets."""

    bench: bool = False
    themes: tuple[str, ...] | None = None
    layout: str = "auto"
    subthemes: tuple[str, ...] | None = None
    ids: tuple[str, ...] | None = None
    min_scores: dict[str, float] = field(default_factory=dict)
    errors: str = "raise"
    verify: str = "size"

    def __post_init__(self) -> None:
        check_error_mode(self.errors)
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.verify not in VERIFY_MODES:
            raise ValueError(f"verify must be one of {VERIFY_MODES}, got {self.verify!r}")
        known = BENCH_THEMES if self.bench else THEMES
        bad = [t for t in self.themes or () if t not in known]
        if bad:
            raise ValueError(f"unknown themes {bad}; known: {list(known)}")
        unknown = set(self.min_scores) - set(SCORE_FILES)
        if unknown:
            raise ValueError(f"unknown score files {sorted(unknown)}; known: {sorted(SCORE_FILES)}")


@dataclass
class Unit:
    """One independently readable piece of work (what streaming distributes)."""

    theme: str
    kind: str  # "folder" | "tar-index" | "tar-stream"
    entries: list[SampleEntry]
    source_shards: list[str] = field(default_factory=list)
    edited_shards: list[str] = field(default_factory=list)


# -- planning -------------------------------------------------------------------------------------
def available_themes(root: DataRoot, bench: bool) -> list[str]:
    known = BENCH_THEMES if bench else THEMES
    found = []
    for theme in known:
        csv_rel = bench_csv_path(theme) if bench else train_csv_path(theme)
        if root.exists(csv_rel):
            found.append(theme)
    if not bench and not found:  # self-contained paired shards (``pack --layout webdataset``)
        found = paired_themes(root, known)
    return found


def select_themes(root: DataRoot, options: LoadOptions) -> list[str]:
    present = available_themes(root, options.bench)
    if options.themes is None:
        if not present:
            what = "{theme}_bench.csv" if options.bench else "prompts/{theme}_train.csv"
            raise SparkleDataError(f"no theme found (looked for {what})", path=root.url)
        return present
    known = BENCH_THEMES if options.bench else THEMES
    bad = [t for t in options.themes if t not in known]
    if bad:
        raise ValueError(f"unknown themes {bad}; known: {list(known)}")
    missing = [t for t in options.themes if t not in present]
    if missing:
        what = bench_csv_path(missing[0]) if options.bench else train_csv_path(missing[0])
        raise SparkleDataError(f"theme {missing[0]!r} is not in this dataset", path=root.uri(what))
    return list(options.themes)


def read_entries(root: DataRoot, theme: str, options: LoadOptions, report: SkipReport) -> list[SampleEntry]:
    if options.bench:
        csv_rel, meta_rel = bench_csv_path(theme), bench_metadata_path(theme)
    else:
        csv_rel, meta_rel = train_csv_path(theme), train_metadata_path(theme)
    if not options.bench and not root.exists(csv_rel) and (paired := paired_shards(root, theme)):
        return read_paired_entries(root, theme, paired, options.errors, report)
    meta_text = root.read_text(meta_rel) if root.exists(meta_rel) else None
    if meta_text is None:
        logger.warning("%s is missing: subtheme/scene/original_scene will be None", root.uri(meta_rel))
    args = (theme, root.read_text(csv_rel), root.uri(csv_rel), meta_text, root.uri(meta_rel))
    try:
        if options.bench:
            refs = [f"ref_images/{theme}/{name}" for name in root.listdir(f"ref_images/{theme}")]
            return join_bench(*args, ref_images=refs, errors=options.errors, report=report)
        return join_train(*args, errors=options.errors, report=report)
    except SparkleDataError as err:  # the whole file is unusable: under "skip" the theme is skipped
        handle(err, options.errors, report, key=f"theme {theme} ({root.uri(csv_rel)})")
        return []


def filter_entries(
    root: DataRoot, theme: str, entries: list[SampleEntry], options: LoadOptions
) -> list[SampleEntry]:
    kept = entries
    if options.subthemes is not None:
        kept = [e for e in kept if e.subtheme in options.subthemes]
    if options.ids is not None:
        wanted = set(options.ids)
        kept = [e for e in kept if e.id in wanted]
    for name, threshold in options.min_scores.items():
        rel = intermediate_jsonl_path(theme, name)
        if not root.exists(rel):
            raise SparkleDataError(
                f"min_scores asks for {name} but the score file is absent", path=root.uri(rel)
            )
        scores = read_jsonl(root.read_text(rel), root.uri(rel))
        field_name = SCORE_FILES[name]
        before = len(kept)
        kept = [
            e
            for e in kept
            if (s := stage_score(scores.get(e.id, {}), field_name)) is not None and s >= threshold
        ]
        logger.info("%s: %d of %d samples pass %s >= %g", theme, len(kept), before, name, threshold)
    return kept


def check_selection(root: DataRoot, entries: Sequence[SampleEntry], options: LoadOptions) -> None:
    """``ids``/``subthemes`` values that match nothing: all of them raise, some of them warn (named)."""
    for name, wanted, present in (
        ("ids", options.ids, {e.id for e in entries}),
        ("subthemes", options.subthemes, {e.subtheme for e in entries}),
    ):
        if wanted is None:
            continue
        unknown = [v for v in dict.fromkeys(wanted) if v not in present]
        if unknown and len(unknown) == len(set(wanted)):
            raise SparkleDataError(f"{name}={unknown} match no sample of the selected themes", path=root.url)
        if unknown:
            warnings.warn(
                f"{name} {unknown} match no sample of the selected themes ({root.url})", stacklevel=2
            )


def plan_units(root: DataRoot, options: LoadOptions, streaming: bool, report: SkipReport) -> list[Unit]:
    """Read the CSV/JSONL index of each theme, apply filters, and cut the work into units."""
    units: list[Unit] = []
    indexed = [(theme, read_entries(root, theme, options, report)) for theme in select_themes(root, options)]
    check_selection(root, [e for _, entries in indexed for e in entries], options)
    selected = [(theme, filter_entries(root, theme, entries, options)) for theme, entries in indexed]
    if not any(entries for _, entries in selected):
        chosen = {k: v for k, v in vars(options).items() if k in ("ids", "subthemes", "min_scores") and v}
        why = f"the selection {chosen} leaves no sample" if chosen else "no sample is left to load"
        raise SparkleDataError(f"{why} ({len(report)} skipped)", path=root.url)
    for theme, entries in selected:
        src_shards = [] if options.bench else root.shards(theme, "source")
        edt_shards = [] if options.bench else root.shards(theme, "edited")
        paired = [] if options.bench or src_shards or edt_shards else paired_shards(root, theme)
        if paired and not root.exists(train_csv_path(theme)):
            # both videos of a pair in one tar: indexed (one pass over the headers) in every mode
            units.append(Unit(theme, "tar-index", entries, paired, paired))
            continue
        use_shards = (
            bool(src_shards or edt_shards) if options.layout == "auto" else options.layout == "shards"
        )
        if use_shards:
            if not src_shards or not edt_shards:
                kind = "source" if not src_shards else "edited"
                raise SparkleDataError(f"no {theme}_{kind}_video_partXX.tar shards found", path=root.url)
            units.append(
                Unit(theme, "tar-stream" if streaming else "tar-index", entries, src_shards, edt_shards)
            )
        else:
            # small folders still split into a few units, so DataLoader workers all get work
            step = min(FOLDER_UNIT_ROWS, max(1, -(-len(entries) // MIN_FOLDER_UNITS)))
            for start in range(0, max(len(entries), 1), step):
                chunk = entries[start : start + step]
                if chunk:
                    units.append(Unit(theme, "folder", chunk))
    return units


# -- generating -----------------------------------------------------------------------------------
def _row(entry: SampleEntry, bench: bool, source: dict, other: dict) -> dict[str, Any]:
    row: dict[str, Any] = entry.text_fields()
    row["source_video"] = source
    row["ref_image" if bench else "edited_video"] = other
    return row


def _verify(ref: dict, root: DataRoot, label: str, sid: str, verify: str) -> None:
    if verify == "none":
        return
    if ref["bytes"] is not None:
        size = len(ref["bytes"])
    else:
        size = ref["size"]
    if size == 0:
        raise SparkleDataError("video file is empty (0 bytes)", path=label, sample_id=sid)
    if verify == "metadata":
        reader = _reader_for(ref, root.storage_options, label)
        reader.metadata  # noqa: B018 - opening the header is the check


def _reader_for(ref: dict, storage_options: dict, label: str) -> Any:
    from .video import VideoReader

    if ref["bytes"] is not None:
        return VideoReader(ref["bytes"], name=label)
    return VideoReader(
        ref["path"], offset=ref["offset"], size=ref["size"], name=label, storage_options=storage_options
    )


def _listing(root: DataRoot, folder: str, cache: dict[str, dict[str, int]]) -> dict[str, int]:
    """``name -> size`` for a folder, listed once (one request per folder, also remotely)."""
    if folder not in cache:  # remote failures raise SparkleHubError (an outage is not a missing file)
        cache[folder] = root.list_sizes(folder)
    return cache[folder]


def _folder_ref(root: DataRoot, rel: str, sid: str, cache: dict[str, dict[str, int]]) -> dict[str, Any]:
    listing = _listing(root, posixpath.dirname(rel), cache)
    name = posixpath.basename(rel)
    if name not in listing:
        raise SparkleDataError("video file is missing", path=root.uri(rel), sample_id=sid)
    return {"path": root.uri(rel), "offset": 0, "size": -1, "bytes": None}, listing[name]


def _gen_folder(
    root: DataRoot, unit: Unit, options: LoadOptions, report: SkipReport
) -> Iterator[tuple[str, dict]]:
    cache: dict[str, dict[str, int]] = {}
    for entry in unit.entries:
        try:
            src, src_size = _folder_ref(root, entry.source_path, entry.id, cache)
            _verify(dict(src, size=src_size), root, src["path"], entry.id, options.verify)
            if options.bench:
                other = empty_ref()
                if entry.ref_image_path:
                    other["path"] = root.uri(entry.ref_image_path)
            else:
                assert entry.edited_path is not None
                other, other_size = _folder_ref(root, entry.edited_path, entry.id, cache)
                _verify(dict(other, size=other_size), root, other["path"], entry.id, options.verify)
        except SparkleDataError as err:
            handle(err, options.errors, report, key=entry.id)
            continue
        yield entry.id, _row(entry, options.bench, src, other)


def _index_shards(
    root: DataRoot, shards: Sequence[str], options: LoadOptions, report: SkipReport, damaged: dict[str, str]
) -> dict[str, tuple[str, TarMember]]:
    """Index every shard; a damaged one raises, or under ``errors="skip"`` keeps its intact members.

    Each damaged shard is reported by name and noted in ``damaged`` (shard -> reason), so that the
    samples it should have held are then reported by id with the cause.
    """
    found: dict[str, tuple[str, TarMember]] = {}
    # remotely, small blocks: the scan seeks from header to header and needs only 512 bytes at each
    kwargs = {} if root.is_local else {"block_size": 1 << 16}
    for shard in shards:
        with root.open(shard, "rb", **kwargs) as f:
            members, damage = scan_tar(f, root.uri(shard))
        if damage is not None:
            handle(damage, options.errors, report, key=f"shard {root.uri(shard)}")
            damaged[shard] = damage.reason
        for name, member in members.items():
            found[name] = (shard, member)
    return found


def _missing_reason(rel: str, shards: Sequence[str], damaged: dict[str, str]) -> str:
    bad = [f"{s} is damaged: {damaged[s]}" for s in shards if s in damaged]
    if bad:
        return f"video {rel} is in no intact shard ({'; '.join(bad)})"
    return f"video {rel} is in no shard ({', '.join(shards)})"


def _gen_tar_index(
    root: DataRoot, unit: Unit, options: LoadOptions, report: SkipReport
) -> Iterator[tuple[str, dict]]:
    damaged: dict[str, str] = {}
    shards = list(dict.fromkeys(unit.source_shards + unit.edited_shards))  # paired shards hold both
    members = _index_shards(root, shards, options, report, damaged)
    for entry in unit.entries:
        try:
            refs = []
            for rel in (entry.source_path, entry.edited_path):
                assert rel is not None
                if rel not in members:
                    shards = unit.source_shards if rel == entry.source_path else unit.edited_shards
                    raise SparkleDataError(
                        _missing_reason(rel, shards, damaged), path=root.url, sample_id=entry.id
                    )
                shard, member = members[rel]
                ref = empty_ref()
                ref.update(path=root.uri(shard), offset=member.offset, size=member.size, member=rel)
                _verify(ref, root, f"{root.uri(shard)}::{rel}", entry.id, options.verify)
                refs.append(ref)
        except SparkleDataError as err:
            handle(err, options.errors, report, key=entry.id)
            continue
        yield entry.id, _row(entry, False, refs[0], refs[1])


def _stream_members(
    root: DataRoot,
    shards: Sequence[str],
    wanted: set[str],
    options: LoadOptions,
    report: SkipReport,
    damaged: dict[str, str],
) -> Iterator[tuple[str, bytes, str]]:
    """Members of each shard in stream order; a damaged shard raises, or under skip ends early (noted)."""
    for shard in shards:
        # remotely: no read-ahead, unwanted members are seeked over (see ``hub.iter_remote_tar``)
        with root.open(shard, "rb", **({} if root.is_local else {"cache_type": "none"})) as f:
            try:
                size = root.remote(shard, lambda full=root.full(shard): root.fs.size(full))
                members = (
                    iter_tar(f, root.uri(shard), wanted, size)
                    if root.is_local
                    else iter_remote_tar(f, size, root.uri(shard), wanted)
                )
                for name, data in members:
                    yield name, data, shard
            except SparkleDataError as damage:
                handle(damage, options.errors, report, key=f"shard {root.uri(shard)}")
                damaged[shard] = damage.reason


def _gen_tar_stream(
    root: DataRoot, unit: Unit, options: LoadOptions, report: SkipReport
) -> Iterator[tuple[str, dict]]:
    """Join the source and edited shard streams on the fly.

    Both streams are advanced alternately, and whichever is behind is pulled first, so when the shards
    list members in the same order (the official packing: sorted by id) at most one video waits.
    """
    by_path: dict[str, SampleEntry] = {}
    for entry in unit.entries:
        by_path[entry.source_path] = entry
        assert entry.edited_path is not None
        by_path[entry.edited_path] = entry
    damaged: dict[str, str] = {}
    src_iter = _stream_members(
        root, unit.source_shards, {e.source_path for e in unit.entries}, options, report, damaged
    )
    edt_iter = _stream_members(
        root,
        unit.edited_shards,
        {e.edited_path for e in unit.entries if e.edited_path},
        options,
        report,
        damaged,
    )
    pending: dict[str, dict[str, tuple[bytes, str]]] = {"src": {}, "edt": {}}
    done = {"src": False, "edt": False}
    emitted: set[str] = set()

    def pull(which: str) -> Iterator[tuple[str, dict]]:
        it = src_iter if which == "src" else edt_iter
        try:
            name, data, shard = next(it)
        except StopIteration:
            done[which] = True
            return
        entry = by_path[name]
        other = "edt" if which == "src" else "src"
        if entry.id in pending[other]:
            other_data, other_shard = pending[other].pop(entry.id)
            pair = {which: (data, shard), other: (other_data, other_shard)}
            yield from emit(entry, pair)
        else:
            pending[which][entry.id] = (data, shard)

    def emit(entry: SampleEntry, pair: dict[str, tuple[bytes, str]]) -> Iterator[tuple[str, dict]]:
        refs = []
        try:
            for which, rel in (("src", entry.source_path), ("edt", entry.edited_path)):
                data, shard = pair[which]
                ref = empty_ref()
                ref.update(bytes=data, size=len(data), path=root.uri(shard), member=rel)
                _verify(ref, root, f"{root.uri(shard)}::{rel}", entry.id, options.verify)
                refs.append(ref)
        except SparkleDataError as err:
            handle(err, options.errors, report, key=entry.id)
            return
        emitted.add(entry.id)
        yield entry.id, _row(entry, False, refs[0], refs[1])

    while not (done["src"] and done["edt"]):
        if done["src"]:
            which = "edt"
        elif done["edt"]:
            which = "src"
        else:
            which = "edt" if len(pending["src"]) >= len(pending["edt"]) and pending["src"] else "src"
        yield from pull(which)
    for entry in unit.entries:
        if entry.id in emitted:
            continue
        missing = [
            kind for kind, key in (("source", "src"), ("edited", "edt")) if entry.id not in pending[key]
        ]
        shards = unit.source_shards if "source" in missing else unit.edited_shards
        bad = [f"{s} is damaged: {damaged[s]}" for s in shards if s in damaged]
        where = "; ".join(bad) if bad else ", ".join(shards)
        err = SparkleDataError(
            f"{' and '.join(missing)} video not found in shards ({where})", path=root.url, sample_id=entry.id
        )
        handle(err, options.errors, report, key=entry.id)


def generate_examples(
    root: DataRoot, units: Sequence[Unit], options: LoadOptions, report: SkipReport | None = None
) -> Iterator[tuple[str, dict]]:
    """Yield ``(key, row)`` for every sample of ``units``, in a deterministic order."""
    report = report if report is not None else SkipReport()
    for unit in units:
        if unit.kind == "folder":
            yield from _gen_folder(root, unit, options, report)
        elif unit.kind == "tar-index":
            yield from _gen_tar_index(root, unit, options, report)
        else:
            yield from _gen_tar_stream(root, unit, options, report)
