"""``info``, ``preview`` and ``demo``: looking at a Sparkle dataset from the shell."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


def add_commands(subparsers: Any) -> None:
    p = subparsers.add_parser("info", help="count samples per theme and subtheme")
    p.add_argument("source", help="folder, fsspec URL or Hub repo id")
    p.add_argument("--bench", action="store_true", help="the source is Sparkle-Bench")
    p.add_argument("--themes", nargs="*", default=None)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--streaming", action="store_true", help="stream instead of downloading a Hub repo")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser(
        "preview", help="side-by-side source|edited mp4 or a contact-sheet PNG of one sample"
    )
    p.add_argument("source")
    p.add_argument("--id", required=True, help="sample id, e.g. Sparkle_location_000223")
    p.add_argument(
        "--out", required=True, help="output .mp4 (video), .gif (animation) or .png/.jpg (contact sheet)"
    )
    p.add_argument("--bench", action="store_true")
    p.set_defaults(func=cmd_preview)

    p = subparsers.add_parser("pack", help="pack a training folder into official-style tar shards")
    p.add_argument("source", help="training-layout folder")
    p.add_argument("out", help="output folder for the shards")
    p.add_argument("--themes", nargs="*", default=None)
    p.add_argument("--max-shard-gb", type=float, default=5.0, help="shard size limit (default: 5 GB)")
    p.add_argument("--intermediates", action="store_true", help="also pack intermediate_data/ artefacts")
    p.add_argument(
        "--layout",
        choices=["official", "webdataset"],
        default="official",
        help="official: the Hub repo's {theme}_{kind}_video_partXX.tar + prompts/; webdataset: self-contained "
        "{theme}-NNNNN.tar with {id}.json/.source.mp4/.edited.mp4 (plain datasets/webdataset read them)",
    )
    p.add_argument("--errors", choices=["raise", "skip"], default="raise", help="skip (and name) bad samples")
    p.set_defaults(func=cmd_pack)

    p = subparsers.add_parser(
        "export", help="export a training folder as a Kiwi-Edit CSV or a Hub-ready folder"
    )
    p.add_argument(
        "source",
        help="training data: folder, tar-shard folder, fsspec URL or Hub repo id (kiwi-csv: a local folder of loose mp4s)",
    )
    p.add_argument("out", help="output .csv (Kiwi-Edit) or folder (Hub)")
    p.add_argument("--format", choices=["kiwi-csv", "hub"], default="hub")
    p.add_argument(
        "--base-path", default=None, help="kiwi-csv: paths relative to this folder (default: SOURCE)"
    )
    p.add_argument("--themes", nargs="*", default=None)
    p.add_argument("--errors", choices=["raise", "skip"], default="raise", help="skip (and name) bad samples")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser(
        "demo", help="build a procedural sample in the official layout, load it back, preview it"
    )
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--per-theme", type=int, default=2, help="samples per theme (default: 2)")
    p.add_argument("--frames", type=int, default=33, help="frames per clip (default: 33)")
    p.set_defaults(func=cmd_demo)


def count(ds: Any) -> dict[str, Any]:
    """Samples per theme and subtheme; a theme without subthemes (openve3m) has ``subthemes: None``."""
    themes: Counter[str] = Counter()
    subthemes: dict[str, Counter[str]] = defaultdict(Counter)
    for theme, sub in zip(ds["theme"], ds["subtheme"], strict=True):
        themes[theme] += 1
        if sub is not None:
            subthemes[theme][sub] += 1
    return {
        "total": sum(themes.values()),
        "themes": {
            t: {"count": n, "subthemes": dict(sorted(subthemes[t].items())) if subthemes[t] else None}
            for t, n in themes.items()
        },
    }


def _load(source: str, bench: bool, themes: Any = None, streaming: bool = False) -> Any:
    from ..data.loading import load_sparkle, load_sparkle_bench

    loader = load_sparkle_bench if bench else load_sparkle
    return loader(source, themes=themes or None, streaming=streaming, verify="none")


def cmd_info(args: argparse.Namespace) -> int:
    from ..data.sources import looks_like_repo_id

    if looks_like_repo_id(args.source):  # a Hub repo: count from its prompt/metadata files alone
        from ..data.hub import index_entries

        entries = index_entries(args.source, bench=args.bench, themes=args.themes or None)
        ds = {"theme": [e.theme for e in entries], "subtheme": [e.subtheme for e in entries]}
    else:
        ds = _load(args.source, args.bench, args.themes, args.streaming)
    if args.streaming and not looks_like_repo_id(args.source):
        rows = [
            {"theme": r["theme"], "subtheme": r["subtheme"]} for r in ds.select_columns(["theme", "subtheme"])
        ]
        ds = {"theme": [r["theme"] for r in rows], "subtheme": [r["subtheme"] for r in rows]}
    stats = count(ds)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{'theme':<12}{'subtheme':<28}{'samples':>8}")
    for theme, entry in stats["themes"].items():
        print(f"{theme:<12}{'(all)':<28}{entry['count']:>8}")
        for sub, n in (entry["subthemes"] or {}).items():
            print(f"{'':<12}{sub:<28}{n:>8}")
    print(f"{'total':<40}{stats['total']:>8}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from ..data.preview import check_preview_path, write_preview

    check_preview_path(args.out)  # before any loading
    ds = _load(args.source, args.bench)
    matches = [i for i, sid in enumerate(ds["id"]) if sid == args.id]
    if not matches:
        print(f"error: id {args.id} not found in {args.source}")
        return 1
    row = ds[matches[0]]
    videos = [row["source_video"]] if args.bench else [row["source_video"], row["edited_video"]]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_preview(videos, row["prompt"], args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    from ..data.writer import pack_shards
    from ..errors import SkipReport

    if not args.max_shard_gb > 0:
        raise ValueError(f"--max-shard-gb must be positive, got {args.max_shard_gb}")
    report = SkipReport()
    written = pack_shards(
        args.source,
        args.out,
        themes=args.themes,
        max_shard_bytes=args.max_shard_gb * 1e9,
        include_intermediates=args.intermediates,
        errors=args.errors,
        skip_report=report,
        layout=args.layout,
    )
    print(f"wrote {sum(p.endswith('.tar') for p in written)} shards to {args.out}")
    print(report.summary())
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..data.export import export_hub_folder, export_kiwi_csv
    from ..errors import SkipReport

    report = SkipReport()
    if args.format == "kiwi-csv":
        n = export_kiwi_csv(
            args.source,
            args.out,
            base_path=args.base_path,
            themes=args.themes,
            errors=args.errors,
            skip_report=report,
        )
        print(f"wrote {n} rows to {args.out}")
    else:
        export_hub_folder(args.source, args.out, themes=args.themes, errors=args.errors, skip_report=report)
        print(f"wrote a Hub-ready folder to {args.out}: datasets.load_dataset({args.out!r}, THEME) loads it")
    print(report.summary())
    return 0


#: What ``demo`` writes under ``--out``: folder name -> what it holds.
DEMO_LAYOUT = {
    "sparkle": "training layout: prompts/, {theme}/{source,edited}_video/, intermediate_data/ (every artefact)",
    "shards": "the same as official tar shards (videos and intermediate artefacts), plus prompts/",
    "bench": "Sparkle-Bench layout: {theme}_bench.csv, {theme}_metadata.jsonl, source_videos/, ref_images/",
    "hub": "Hub-ready export: data/{theme}/*.parquet with embedded mp4s and a README.md with configs",
    "previews": "side-by-side source | edited previews (.mp4) and one contact sheet (.png)",
    "generated": "the generation pipeline (reference backends) run on procedural clips: sources/, dataset/, preview.png",
}


def cmd_demo(args: argparse.Namespace) -> int:
    import shutil

    from tqdm.auto import tqdm

    from ..data.export import export_hub_folder
    from ..data.loading import load_sparkle, load_sparkle_bench
    from ..data.preview import write_preview
    from ..data.synthetic import make_bench_records, make_demo_records
    from ..data.writer import pack_shards, write_sparkle, write_sparkle_bench

    if args.per_theme < 1:
        raise ValueError(f"--per-theme must be at least 1, got {args.per_theme}")
    if args.frames < 1:
        raise ValueError(f"--frames must be at least 1, got {args.frames}")
    start = time.perf_counter()
    out = Path(args.out)
    for name in DEMO_LAYOUT:  # only the demo's own sub-folders are replaced
        if (out / name).is_dir():
            shutil.rmtree(out / name)
    folder, shards, bench, hub, previews, _generated = (out / name for name in DEMO_LAYOUT)
    records = make_demo_records(num_per_theme=args.per_theme, num_frames=args.frames)
    write_sparkle(records, folder, overwrite=True, progress=False)
    print(
        f"wrote {len(records)} procedural pairs with every pipeline artefact in the official layout to {folder}"
    )
    pack_shards(folder, shards, include_intermediates=True, progress=False)
    print(f"packed tar shards into {shards}")
    bench_records = make_bench_records(num_per_theme=args.per_theme, num_frames=args.frames)
    write_sparkle_bench(bench_records, bench, overwrite=True, progress=False)
    if len(load_sparkle_bench(bench, progress=False)) != len(bench_records):
        print("error: the bench folder does not load back")
        return 1
    print(f"wrote a {len(bench_records)}-video Sparkle-Bench to {bench}")
    local = load_sparkle(folder, progress=False)
    streamed = list(load_sparkle(shards, streaming=True))
    if sorted(r["id"] for r in streamed) != sorted(local["id"]):
        print("error: the shards do not hold the same samples as the folder")
        return 1
    export_hub_folder(folder, hub, progress=False)
    print(f"exported a Hub-ready folder to {hub}")
    stats = count(local)
    for theme, entry in stats["themes"].items():
        print(f"  {theme}: {entry['count']} samples, subthemes {entry['subthemes']}")
    previews.mkdir(parents=True, exist_ok=True)
    for row in tqdm(local, desc="previews", total=len(local)):
        write_preview(
            [row["source_video"], row["edited_video"]], row["prompt"], str(previews / f"{row['id']}.mp4")
        )
    first = local[0]
    sheet = previews / f"{first['id']}.png"
    write_preview([first["source_video"], first["edited_video"]], first["prompt"], str(sheet))
    print(f"wrote {len(local)} side-by-side previews and a contact sheet ({sheet}) to {previews}")
    from ..generation.demo import run_reference_demo

    generated = run_reference_demo(out / "generated", num_frames=max(args.frames, 17), progress=False)
    print(
        f"generated {len(generated.result.published)} pairs from procedural clips with the reference "
        f"pipeline into {generated.dataset} (preview: {generated.preview})"
    )
    for name, what in DEMO_LAYOUT.items():
        print(f"  {out / name}: {what}")
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0
