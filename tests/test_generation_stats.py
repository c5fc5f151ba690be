"""A run a user can read: ``stats.json`` names each sample by its source file, theme and keyword, with
its stage, status, reason and seconds, and per-stage timing; the printed summary shows the numbers."""

from __future__ import annotations

import json
from pathlib import Path

from sparkle_video.cli import main
from sparkle_video.data.synthetic import make_pair
from sparkle_video.data.video import write_video
from sparkle_video.generation.ledger import Ledger, Outcome, format_table, seconds_summary, summarise
from sparkle_video.generation.runner import user_names


def test_seconds_summary() -> None:
    assert seconds_summary([]) == {"count": 0, "total": 0.0, "mean": 0.0, "median": 0.0}
    assert seconds_summary([3.0, 1.0, 2.0, 10.0]) == {"count": 4, "total": 16.0, "mean": 4.0, "median": 2.5}


def test_summary_keeps_each_reason_and_its_numbers(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    for sid in ("clip_000000", "clip_000001", "clip_000002"):
        ledger.record("camera", sid, Outcome("passed", seconds=0.5))
    ledger.record(
        "frame_edit", "clip_000000", Outcome("rejected", "edited frame 0 scored 6.20 < 8.0", seconds=2.0)
    )
    ledger.record(
        "frame_edit", "clip_000001", Outcome("rejected", "edited frame 0 scored 7.45 < 8.0", seconds=4.0)
    )
    ledger.record("frame_edit", "clip_000002", Outcome("failed", error="RuntimeError: boom", seconds=1.0))
    details = {
        "clip_000000": {"source": "clips/a.mp4", "theme": "time", "chosen_keyword": "night: moonlit beach"},
        "clip_000001": {
            "source": "clips/b.mp4",
            "theme": "season",
            "chosen_keyword": "winter: icy coastline",
        },
    }
    stats = summarise(ledger, ["clip_000000", "clip_000001", "clip_000002"], [], details)
    assert stats["samples"]["clip_000000"] == {
        "source": "clips/a.mp4",
        "theme": "time",
        "chosen_keyword": "night: moonlit beach",
        "stage": "frame_edit",
        "status": "rejected",
        "reason": "edited frame 0 scored 6.20 < 8.0",
        "seconds": {"camera": 0.5, "frame_edit": 2.0},
    }
    assert stats["seconds"]["frame_edit"] == {"count": 3, "total": 7.0, "mean": 2.333, "median": 2.0}
    assert stats["seconds"]["background"]["count"] == 0
    table = format_table(stats)
    lines = table.splitlines()
    assert lines[0].split() == [
        "stage",
        "passed",
        "rejected",
        "failed",
        "pending",
        "mean",
        "s",
        "median",
        "s",
    ]
    assert lines[1].split() == ["camera", "3", "0", "0", "0", "0.50", "0.50"]
    assert lines[2].split() == ["frame_edit", "0", "2", "1", "0", "2.33", "2.00"]
    group = lines.index("  frame_edit: 2 x rejected: edited frame # scored # < #")
    assert lines[group + 1 : group + 3] == [
        "    clip_000000 (clips/a.mp4): edited frame 0 scored 6.20 < 8.0",
        "    clip_000001 (clips/b.mp4): edited frame 0 scored 7.45 < 8.0",
    ]
    assert "  frame_edit: 1 x failed: RuntimeError: boom" in lines
    assert "    clip_000002: RuntimeError: boom" in lines


def test_user_names_keep_the_path_as_given(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "take1.mp4"
    real.parent.mkdir()
    real.write_bytes(b"x")
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "linked.mp4").symlink_to(real)
    assert user_names(folder, [real.resolve()]) == {str(real.resolve()): str(folder / "linked.mp4")}
    assert user_names(real, [real.resolve()]) == {str(real.resolve()): str(real)}


def test_cli_run_stats_and_summary(tmp_path: Path, capsys) -> None:
    sources = tmp_path / "in"
    sources.mkdir()
    write_video(make_pair(100, 21, 112, 192).source, sources / "walk.mp4", fps=16)
    write_video(make_pair(101, 9, 112, 192).source, sources / "short.mp4", fps=16)
    out = tmp_path / "out"
    assert main(["generate", "run", "--sources", str(sources), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    stats = json.loads((out / "stats.json").read_text())
    short, walk = stats["samples"]["clip_000000"], stats["samples"]["clip_000001"]
    assert short == {
        "source": str(sources / "short.mp4"),
        "theme": "",
        "chosen_keyword": "",
        "published_id": "",
        "stage": "camera",
        "status": "rejected",
        "reason": "too short: 9 frames < 17",
        "seconds": {"camera": short["seconds"]["camera"]},
    }
    assert walk["source"] == str(sources / "walk.mp4") and walk["theme"] in (
        "location",
        "season",
        "time",
        "style",
    )
    assert walk["chosen_keyword"].split(": ")[0] in [
        s.split(": ")[0]
        for s in __import__("sparkle_video.generation.taxonomy", fromlist=["x"]).scenes(walk["theme"])
    ]
    assert set(walk["seconds"]) <= {"camera", "frame_edit", "background", "tracking", "final"}
    assert all(v >= 0 for v in walk["seconds"].values())
    assert stats["seconds"]["camera"]["count"] == 2
    camera_row = next(line for line in printed.splitlines() if line.startswith("camera"))
    assert f"{stats['seconds']['camera']['mean']:.2f}" in camera_row
    assert f"    clip_000000 ({sources / 'short.mp4'}): too short: 9 frames < 17" in printed
    if walk["status"] == "published":
        assert walk["published_id"] == f"Sparkle_{walk['theme']}_000001"
        meta = (out / "prompts" / f"{walk['theme']}_train_metadata.jsonl").read_text()
        assert json.loads(meta.splitlines()[0])["metadata"]["chosen_keyword"] == walk["chosen_keyword"]
