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
    BENCH_CSV_COLUMNS,
    BENCH_THEMES,
    SCORE_FILES,
    THEMES,
    TRAIN_CSV_COLUMNS,
    bench_csv_path,
    bench_metadata_path,
    intermediate_jsonl_path,
    train_csv_path,
    train_metadata_path,
)
from .paired_shards import paired_shards, paired_themes, read_paired_entries
from .records import SampleEntry, join_bench, join_train, read_csv_rows, read_jsonl, stage_score
from .shards import ShardScan, TarMember, iter_tar, scan_shard
from .sources import DataRoot, changed_error, check_stamp, file_stamp
from .transport import iter_remote_tar

logger = logging.getLogger("sparkle_video")

VERIFY_MODES = ("none", "size", "metadata")
LAYOUTS = ("auto", "folder", "shards")
#: Rows per work unit for folder layouts (units are what streaming splits across workers and ranks).
FOLDER_UNIT_ROWS = 64
#: Units a folder theme is cut into at least (when it has that many rows).
MIN_FOLDER_UNITS = 8
#: Units a theme in local tar shards is cut into when streaming (each indexes the shards' headers once).
MAX_LOCAL_SHARD_UNITS = 8


def empty_ref() -> dict[str, Any]:
    """A file reference: ``path`` (and a byte range in it) or ``bytes``; ``member`` names a tar member.

    ``stamp`` records what the file was when it was indexed (``member_stamp``), so that opening it later
    refuses a file that changed instead of reading another sample's bytes.
    """
    return {"path": None, "offset": 0, "size": -1, "bytes": None, "member": None, "stamp": None}


def member_stamp(shard_stamp: str, member: TarMember) -> str:
    """A shard's stamp plus the member's header checksum (what ``CheckedOpen`` re-reads)."""
    return f"{shard_stamp}|chksum={member.chksum}" if shard_stamp else ""


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
    # a theme cut into several units over the same shards: the members its other units name, and whether
    # this unit names the refused members no entry names (only one unit does, so each is named once)
    sibling_paths: frozenset[str] = frozenset()
    report_orphans: bool = True
    #: shard -> stamp taken when the load was planned: every unit must see the shards unchanged
    shard_stamps: dict[str, str] = field(default_factory=dict)


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


def unknown_theme_files(root: DataRoot, bench: bool) -> dict[str, str]:
    """``theme -> file`` for prompt CSVs whose theme is not a Sparkle theme (``prompts/foo_train.csv``)."""
    known = BENCH_THEMES if bench else THEMES
    folder, suffix = ("", "_bench.csv") if bench else ("prompts", "_train.csv")
    found = {}
    for name in root.listdir(folder):
        theme = name[: -len(suffix)] if name.endswith(suffix) else None
        if theme and theme not in known:
            found[theme] = posixpath.join(folder, name) if folder else name
    return found


def report_unknown_themes(root: DataRoot, options: LoadOptions, report: SkipReport) -> int:
    """Count and name the pairs of prompt files whose theme is unknown: they are not loaded, never silently.

    Each pair is added to ``report`` by id (in both error modes: an unknown theme is not damage, so it
    does not stop a load) and one warning per file says how many pairs it held. Returns the count.
    """
    total = 0
    for theme, rel in sorted(unknown_theme_files(root, options.bench).items()):
        known = BENCH_THEMES if options.bench else THEMES
        reason = f"theme {theme!r} is not a Sparkle theme (known: {', '.join(known)}), so it is not loaded"
        try:
            columns = BENCH_CSV_COLUMNS if options.bench else TRAIN_CSV_COLUMNS
            rows = read_csv_rows(root.read_text(rel), root.uri(rel), columns)
        except SparkleDataError as err:
            report.add(f"theme {theme} ({root.uri(rel)})", f"{reason}; {err.reason}")
            total += 1
            continue
        key = "original_video" if options.bench else "task"
        for rowno, row in enumerate(rows, start=2):
            sid = posixpath.splitext(posixpath.basename((row.get(key) or "").strip()))[0]
            report.add(sid or f"{root.uri(rel)}:{rowno}", f"{reason} ({root.uri(rel)})")
        total += len(rows)
        warnings.warn(f"{root.uri(rel)}: {len(rows)} pairs not loaded: {reason}", stacklevel=2)
    return total


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
    root: DataRoot,
    theme: str,
    entries: list[SampleEntry],
    options: LoadOptions,
    report: SkipReport | None = None,
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
        scores = read_jsonl(root.read_text(rel), root.uri(rel), options.errors, report)
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
    if options.themes is None:  # "every theme present": a file of an unknown theme is named, not dropped
        report_unknown_themes(root, options, report)
    indexed = [(theme, read_entries(root, theme, options, report)) for theme in select_themes(root, options)]
    check_selection(root, [e for _, entries in indexed for e in entries], options)
    selected = [(theme, filter_entries(root, theme, entries, options, report)) for theme, entries in indexed]
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
            if streaming and not root.is_local:  # remote: one pass over each shard, no seeks back
                units.append(Unit(theme, "tar-stream", entries, src_shards, edt_shards))
                continue
            # local (and non-streaming): headers indexed, members read by byte range; streaming cuts the
            # theme into a few units so that every DataLoader worker gets work
            count = min(MAX_LOCAL_SHARD_UNITS, max(1, len(entries))) if streaming else 1
            step = -(-len(entries) // count) if entries else 1
            stamps = {sh: root.stamp(sh) for sh in src_shards + edt_shards} if count > 1 else {}
            paths = (
                frozenset(p for e in entries for p in (e.source_path, e.edited_path) if p)
                if count > 1
                else frozenset()
            )
            for start in range(0, max(len(entries), 1), step):
                chunk = entries[start : start + step]
                if chunk or not entries:
                    units.append(
                        Unit(
                            theme,
                            "tar-index",
                            chunk,
                            src_shards,
                            edt_shards,
                            paths,
                            report_orphans=start == 0,
                            shard_stamps=stamps,
                        )
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
    stamp = file_stamp(root.full(rel)) if root.is_local else None
    return dict(empty_ref(), path=root.uri(rel), stamp=stamp), listing[name]


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


@dataclass
class ShardIndex:
    """Every shard of a unit, scanned: where each member is, what each shard was, and what was refused."""

    members: dict[str, tuple[str, TarMember]] = field(default_factory=dict)
    scans: dict[str, ShardScan] = field(default_factory=dict)
    stamps: dict[str, str] = field(default_factory=dict)
    #: member name -> (shard, error) for members no reader may return (a name stored twice, sparse)
    refused: dict[str, tuple[str, SparkleDataError]] = field(default_factory=dict)


def _scan_one(root: DataRoot, shard: str) -> tuple[ShardScan, str]:
    """Scan a shard's headers; its stamp is taken before and must hold after (it did not change meanwhile)."""
    # remotely, small blocks: the scan seeks from header to header and needs only 512 bytes at each
    kwargs = {} if root.is_local else {"block_size": 1 << 16}
    stamp = root.stamp(shard)
    with root.open(shard, "rb", **kwargs) as f:
        scan = scan_shard(f, root.uri(shard))
    if root.is_local:
        check_stamp(root.full(shard), stamp, "while it was indexed")
    return scan, stamp


def _index_shards(
    root: DataRoot,
    shards: Sequence[str],
    options: LoadOptions,
    report: SkipReport,
    damaged: dict[str, str],
    report_damage: bool = True,
) -> ShardIndex:
    """Index every shard; a damaged one raises, or under ``errors="skip"`` keeps its intact members.

    Each damaged shard is reported by name and noted in ``damaged`` (shard -> reason), so that the
    samples it should have held are then reported by id with the cause. A refused member (a name stored
    twice, within or across the shards, or a sparse file) raises, or under skip is kept out of every
    mode alike and reported with the sample that names it (``_drop_refused``). ``report_damage=False``
    leaves damage to the stream that reads the shard next (it yields the intact part first).
    """
    index = ShardIndex()
    where: dict[str, list[tuple[str, int]]] = {}
    for shard in shards:
        scan, index.stamps[shard] = _scan_one(root, shard)
        index.scans[shard] = scan
        for name, err in scan.refused.items():
            if options.errors == "raise":
                raise err
            index.refused[name] = (shard, err)
        if scan.damage is not None and report_damage:
            handle(scan.damage, options.errors, report, key=f"shard {root.uri(shard)}")
            damaged[shard] = scan.damage.reason
        for name, member in scan.members.items():
            where.setdefault(name, []).append((shard, member.offset))
            index.members[name] = (shard, member)
    for name, places in where.items():
        if len(places) > 1:  # the same member in two shards: which one wins would depend on the order
            index.members.pop(name)
            err = SparkleDataError(
                f"tar member {name!r} is stored in {len(places)} shards "
                f"({', '.join(root.uri(s) for s, _ in places)}): one name must hold one sample",
                path=root.uri(places[-1][0]),
            )
            if options.errors == "raise":
                raise err
            index.refused[name] = (places[-1][0], err)
    return index


def _drop_refused(
    root: DataRoot,
    unit: Unit,
    index: ShardIndex,
    options: LoadOptions,
    report: SkipReport,
) -> list[SampleEntry]:
    """Entries whose videos are not refused members; the others are reported by id with the member's error.

    A refused member that no entry names is reported too, by shard and member, so nothing goes unnamed.
    """
    kept = []
    named: set[str] = set()
    for entry in unit.entries:
        bad = [rel for rel in (entry.source_path, entry.edited_path) if rel in index.refused]
        named.update(bad)
        if not bad:
            kept.append(entry)
            continue
        shard, err = index.refused[bad[0]]
        handle(
            SparkleDataError(err.reason, path=root.uri(shard), sample_id=entry.id),
            options.errors,
            report,
            key=entry.id,
        )
    orphans = set(index.refused) - named - unit.sibling_paths if unit.report_orphans else set()
    for name in sorted(orphans):
        shard, err = index.refused[name]
        handle(err, options.errors, report, key=f"shard {root.uri(shard)}::{name}")
    return kept


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
    # a damaged shard is named once per theme (by its first unit); each unit names its own samples
    index = _index_shards(root, shards, options, report, damaged, report_damage=unit.report_orphans)
    for shard, scan in index.scans.items():  # the cause, for this unit's samples the damage cost
        if scan.damage is not None:
            damaged.setdefault(shard, scan.damage.reason)
    for shard, was in unit.shard_stamps.items():  # the shards this theme's other units read
        now = index.stamps.get(shard)
        if now is not None and now != was:
            raise changed_error(root.uri(shard), was, now, "while streaming")
    members = index.members
    for entry in _drop_refused(root, unit, index, options, report):
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
                ref["stamp"] = member_stamp(index.stamps[shard], member) if root.is_local else None
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
    index: ShardIndex | None = None,
) -> Iterator[tuple[str, bytes, str]]:
    """Members of each shard in stream order; a damaged shard raises, or under skip ends early (noted).

    With ``index`` (local shards, scanned first), each member must be where the scan saw it and the file
    must keep its size, mtime and inode while it is read: a shard replaced or rewritten mid-stream
    raises ``SparkleDataError`` naming it before any byte of the changed part is yielded.
    """
    for shard in shards:
        # remotely: no read-ahead, unwanted members are seeked over (see ``hub.iter_remote_tar``)
        with root.open(shard, "rb", **({} if root.is_local else {"cache_type": "none"})) as f:
            try:
                size = root.remote(shard, lambda full=root.full(shard): root.fs.size(full))
                if index is not None:
                    stamp, full = index.stamps[shard], root.full(shard)
                    if stamp and file_stamp(full) != stamp:
                        raise changed_error(root.uri(shard), stamp, file_stamp(full))
                    members = iter_tar(
                        f,
                        root.uri(shard),
                        wanted,
                        size,
                        expected=index.scans[shard],
                        check=lambda full=full, stamp=stamp: check_stamp(
                            full, stamp, "while it was streamed"
                        ),
                    )
                elif root.is_local:
                    members = iter_tar(f, root.uri(shard), wanted, size)
                else:
                    members = iter_remote_tar(f, size, root.uri(shard), wanted)
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
    damaged: dict[str, str] = {}
    index = None
    entries: Sequence[SampleEntry] = unit.entries
    if (
        root.is_local
    ):  # a header scan first (cheap: seeks over the data), so streaming refuses what indexing does
        shards = unit.source_shards + unit.edited_shards
        index = _index_shards(root, shards, options, report, {}, report_damage=False)
        entries = _drop_refused(root, unit, index, options, report)
    by_path: dict[str, SampleEntry] = {}
    for entry in entries:
        by_path[entry.source_path] = entry
        assert entry.edited_path is not None
        by_path[entry.edited_path] = entry
    src_iter = _stream_members(
        root, unit.source_shards, {e.source_path for e in entries}, options, report, damaged, index
    )
    edt_iter = _stream_members(
        root,
        unit.edited_shards,
        {e.edited_path for e in entries if e.edited_path},
        options,
        report,
        damaged,
        index,
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
    for entry in entries:
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
