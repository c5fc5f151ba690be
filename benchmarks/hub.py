"""Hub benchmark: bytes served / bytes needed and load time against the local folder, through a loopback Hub.

Usage: python benchmarks/hub.py [--pairs 6] [--frames 33] [--json OUT]

Writes a small Sparkle repo (folder layout and tar shards), serves both from a loopback Hub on
127.0.0.1 (the test fixture in ``tests/hub_server.py``, speaking the real Hub API to the real
``huggingface_hub`` client), and for each way of loading reports:

- bytes served / bytes needed (needed = the files, or tar members, the rows actually use), and
- the median seconds of the load plus decoding every frame, against the same load from the local
  folder (the baseline, ratio 1.0), each in a fresh interpreter with an empty Hub cache.

Loopback has no latency and no bandwidth limit: the times measure the client-side overhead of the Hub
path, not a real network.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import pack, write_train
from hub_server import LoopbackHub, last_json, run_hub_python

from sparkle_video import write_video

SCRIPT = """
import json, time
t0 = time.perf_counter()
from sparkle_video import load_sparkle, load_sparkle_bench
ds = load_sparkle({source!r}, streaming={streaming}, **{kwargs!r})
n = 0
for row in ds:
    row["source_video"].num_frames
    row["source_video"].get_frames()
    row["edited_video"].get_frames()
    n += 1
print(json.dumps({{"rows": n, "seconds": time.perf_counter() - t0}}))
"""

INFO_SCRIPT = """
import json, time
t0 = time.perf_counter()
from sparkle_video.data.hub import index_entries
n = len(index_entries({source!r}, bench=False, themes=None))
print(json.dumps({{"rows": n, "seconds": time.perf_counter() - t0}}))
"""


def make_repo(root: Path, pairs: int, frames: int) -> dict[str, dict]:
    """Training folder with textured, moving clips (so files have realistic sizes)."""
    per_theme = {"location": pairs - pairs // 2, "season": pairs // 2}
    info = write_train(root, per_theme, frames=2, videos=False)
    rng = np.random.default_rng(0)
    for entry in info.values():
        for kind in ("source", "edited"):
            base = rng.integers(0, 255, size=(18, 32, 3), dtype=np.uint8)
            base = np.kron(base, np.ones((8, 8, 1), dtype=np.uint8))
            clip = np.stack([np.roll(base, 2 * t, axis=1) for t in range(frames)])
            write_video(clip, root / entry[kind], fps=16)
    return info


def size(root: Path, rel: str) -> int:
    return (root / rel).stat().st_size


def timed(script: str, hub: LoopbackHub, cache: Path, repeats: int) -> tuple[float, int]:
    """Median in-process seconds of ``script`` over ``repeats`` fresh interpreters, each with an empty cache."""
    runs = []
    for k in range(repeats):
        got = last_json(run_hub_python(script, hub, cache / f"run{k}"))
        runs.append(got["seconds"])
    return statistics.median(runs), got["rows"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sparkle-hub-bench-") as tmp:
        base = Path(tmp)
        folder, shards = base / "folder", base / "shards"
        info = make_repo(folder, args.pairs, args.frames)
        pack(folder, shards, per_shard=2)
        prompts = sum(p.stat().st_size for p in (folder / "prompts").iterdir())
        season_prompts = sum(p.stat().st_size for p in (folder / "prompts").glob("season_*"))
        videos = {rel: size(folder, rel) for e in info.values() for rel in (e["source"], e["edited"])}
        season = [rel for rel in videos if rel.startswith("season/")]
        first = next(iter(info.values()))
        pair = videos[first["source"]] + videos[first["edited"]]
        tar_members = 0
        for tar in shards.glob("*.tar"):
            with tarfile.open(tar) as tf:
                tar_members += sum(m.size for m in tf.getmembers())

        hub = LoopbackHub().start()
        hub.add_repo("bench/sparkle", folder)
        hub.add_repo("bench/sparkle-shards", shards)
        cases = [
            # name, script, hub source, local source, kwargs, streaming, bytes needed
            (
                "download, themes=season",
                SCRIPT,
                "bench/sparkle",
                str(folder),
                {"themes": "season"},
                False,
                season_prompts + sum(videos[r] for r in season),
            ),
            ("stream folder", SCRIPT, "bench/sparkle", str(folder), {}, True, prompts + sum(videos.values())),
            ("stream shards", SCRIPT, "bench/sparkle-shards", str(shards), {}, True, prompts + tar_members),
            (
                "stream shards, limit=1",
                SCRIPT,
                "bench/sparkle-shards",
                str(shards),
                {"limit": 1},
                True,
                prompts + pair,
            ),
            (
                "download shards, ids=[1 id]",
                SCRIPT,
                "bench/sparkle-shards",
                str(shards),
                {"ids": [first["source"].split("/")[-1][:-4]]},
                False,
                prompts + pair,
            ),
            ("info (index only)", INFO_SCRIPT, "bench/sparkle-shards", None, {}, False, prompts),
        ]
        results = []
        try:
            for k, (name, script, source, local, kwargs, streaming, needed) in enumerate(cases):
                hub.clear()
                hub_s, rows = timed(
                    script.format(source=source, streaming=streaming, kwargs=kwargs),
                    hub,
                    base / f"cache{k}",
                    args.repeats,
                )
                served = sum(r.bytes_sent for r in hub.requests("resolve", "GET")) // args.repeats
                requests = len(hub.log) // args.repeats
                local_s = None
                if local is not None:
                    local_s, _ = timed(
                        script.format(source=local, streaming=streaming, kwargs=kwargs),
                        hub,
                        base / f"local-cache{k}",
                        args.repeats,
                    )
                results.append(
                    {
                        "case": name,
                        "rows": rows,
                        "bytes_needed": needed,
                        "bytes_served": served,
                        "served_over_needed": served / needed,
                        "requests": requests,
                        "hub_s": hub_s,
                        "local_s": local_s,
                        "hub_over_local": hub_s / local_s if local_s else None,
                    }
                )
            # a second load of a fully cached selection: nothing crosses the network
            hub.clear()
            script = SCRIPT.format(source="bench/sparkle", streaming=False, kwargs={"themes": "season"})
            last_json(run_hub_python(script, hub, base / "warm"))
            hub.clear()
            warm = last_json(run_hub_python(script, hub, base / "warm"))
            results.append(
                {
                    "case": "download again (cached)",
                    "rows": warm["rows"],
                    "bytes_needed": 0,
                    "bytes_served": sum(r.bytes_sent for r in hub.requests("resolve", "GET")),
                    "served_over_needed": None,
                    "requests": len(hub.log),
                    "hub_s": warm["seconds"],
                    "local_s": None,
                    "hub_over_local": None,
                }
            )
        finally:
            hub.stop()

    print(
        f"sparkle-video Hub benchmark ({platform.node()}, {args.pairs} pairs x {args.frames} frames, loopback Hub)"
    )
    print(
        f"{'case':<30}{'rows':>5}{'needed':>10}{'served':>10}{'ratio':>7}{'reqs':>6}{'hub s':>8}{'local s':>9}{'x':>6}"
    )
    for r in results:
        ratio = f"{r['served_over_needed']:.2f}" if r["served_over_needed"] is not None else "-"
        local = f"{r['local_s']:.2f}" if r["local_s"] is not None else "-"
        x = f"{r['hub_over_local']:.2f}" if r["hub_over_local"] is not None else "-"
        print(
            f"{r['case']:<30}{r['rows']:>5}{r['bytes_needed']:>10}{r['bytes_served']:>10}{ratio:>7}"
            f"{r['requests']:>6}{r['hub_s']:>8.2f}{local:>9}{x:>6}"
        )
    print("ratio = bytes served / bytes needed; x = Hub load time / local folder load time (same run)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
