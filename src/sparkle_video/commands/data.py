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

    p = subparsers.add_parser("preview", help="side-by-side source|edited mp4 or a contact-sheet PNG of one sample")
    p.add_argument("source")
    p.add_argument("--id", required=True, help="sample id, e.g. Sparkle_location_000223")
    p.add_argument("--out", required=True, help="output .mp4 (video) or .png (contact sheet)")
    p.add_argument("--bench", action="store_true")
    p.set_defaults(func=cmd_preview)

    p = subparsers.add_parser("pack", help="pack a training folder into official-style tar shards")
    p.add_argument("source", help="training-layout folder")
    p.add_argument("out", help="output folder for the shards")
    p.add_argument("--themes", nargs="*", default=None)
    p.add_argument("--max-shard-gb", type=float, default=5.0, help="shard size limit (default: 5 GB)")
    p.add_argument("--intermediates", action="store_true", help="also pack intermediate_data/ artefacts")
    p.set_defaults(func=cmd_pack)

    p = subparsers.add_parser("export", help="export a training folder as a Kiwi-Edit CSV or a Hub-ready folder")
    p.add_argument(
        "source",
        help="training data: folder, tar-shard folder, fsspec URL or Hub repo id (kiwi-csv: a local folder of loose mp4s)",
    )
    p.add_argument("out", help="output .csv (Kiwi-Edit) or folder (Hub)")
    p.add_argument("--format", choices=["kiwi-csv", "hub"], default="hub")
    p.add_argument("--base-path", default=None, help="kiwi-csv: paths relative to this folder (default: SOURCE)")
    p.add_argument("--themes", nargs="*", default=None)
    p.add_argument("--errors", choices=["raise", "skip"], default="raise", help="skip (and name) bad samples")
    p.set_defaults(func=cmd_export)

    p = subparsers.add_parser("demo", help="build a procedural sample in the official layout, load it back, preview it")
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--per-theme", type=int, default=2, help="samples per theme (default: 2)")
    p.add_argument("--frames", type=int, default=33, help="frames per clip (default: 33)")
    p.set_defaults(func=cmd_demo)


def count(ds: Any) -> dict[str, Any]:
    themes: Counter[str] = Counter()
    subthemes: dict[str, Counter[str]] = defaultdict(Counter)
    for theme, sub in zip(ds["theme"], ds["subtheme"], strict=True):
        themes[theme] += 1
        subthemes[theme][sub or "-"] += 1
    return {
        "total": sum(themes.values()),
        "themes": {t: {"count": n, "subthemes": dict(sorted(subthemes[t].items()))} for t, n in themes.items()},
    }


def _load(source: str, bench: bool, themes: Any = None, streaming: bool = False) -> Any:
    from ..data import load_sparkle, load_sparkle_bench

    loader = load_sparkle_bench if bench else load_sparkle
    return loader(source, themes=themes or None, streaming=streaming, verify="none")


def cmd_info(args: argparse.Namespace) -> int:
    ds = _load(args.source, args.bench, args.themes, args.streaming)
    if args.streaming:
        rows = [{"theme": r["theme"], "subtheme": r["subtheme"]} for r in ds.select_columns(["theme", "subtheme"])]
        ds = {"theme": [r["theme"] for r in rows], "subtheme": [r["subtheme"] for r in rows]}
    stats = count(ds)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    print(f"{'theme':<12}{'subtheme':<28}{'samples':>8}")
    for theme, entry in stats["themes"].items():
        print(f"{theme:<12}{'(all)':<28}{entry['count']:>8}")
        for sub, n in entry["subthemes"].items():
            print(f"{'':<12}{sub:<28}{n:>8}")
    print(f"{'total':<40}{stats['total']:>8}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from ..preview import write_preview

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
    from ..writer import pack_shards

    written = pack_shards(
        args.source, args.out, themes=args.themes, max_shard_bytes=args.max_shard_gb * 1e9,
        include_intermediates=args.intermediates,
    )
    print(f"wrote {sum(p.endswith('.tar') for p in written)} shards to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..errors import SkipReport
    from ..export import export_hub_folder, export_kiwi_csv

    report = SkipReport()
    if args.format == "kiwi-csv":
        n = export_kiwi_csv(
            args.source, args.out, base_path=args.base_path, themes=args.themes, errors=args.errors, skip_report=report
        )
        print(f"wrote {n} rows to {args.out}")
    else:
        export_hub_folder(args.source, args.out, themes=args.themes, errors=args.errors, skip_report=report)
        print(f"wrote a Hub-ready folder to {args.out}: datasets.load_dataset({args.out!r}, THEME) loads it")
    print(report.summary())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..data import load_sparkle
    from ..preview import write_preview
    from ..synthetic import make_demo_records
    from ..writer import pack_shards, write_sparkle

    start = time.perf_counter()
    out = Path(args.out)
    folder, shards, previews = out / "sparkle", out / "shards", out / "previews"
    records = make_demo_records(num_per_theme=args.per_theme, num_frames=args.frames)
    write_sparkle(records, folder, overwrite=True)
    print(f"wrote {len(records)} procedural pairs in the official layout to {folder}")
    pack_shards(folder, shards)
    print(f"packed tar shards into {shards}")
    local = load_sparkle(folder)
    streamed = list(load_sparkle(shards, streaming=True))
    if sorted(r["id"] for r in streamed) != sorted(local["id"]):
        print("error: the shards do not hold the same samples as the folder")
        return 1
    stats = count(local)
    for theme, entry in stats["themes"].items():
        print(f"  {theme}: {entry['count']} samples, subthemes {entry['subthemes']}")
    previews.mkdir(parents=True, exist_ok=True)
    for row in tqdm(local, desc="previews", total=len(local)):
        write_preview([row["source_video"], row["edited_video"]], row["prompt"], str(previews / f"{row['id']}.mp4"))
    first = local[0]
    sheet = previews / f"{first['id']}.png"
    write_preview([first["source_video"], first["edited_video"]], first["prompt"], str(sheet))
    print(f"wrote {len(local)} side-by-side previews and a contact sheet ({sheet}) to {previews}")
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return 0
