"""The data commands: info, preview, pack, export and demo, run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sparkle_video import VideoReader, load_sparkle
from sparkle_video.cli import main

# End to end (subprocesses, servers, whole runs): in CI, left out of mutation runs (see pyproject.toml).
pytestmark = pytest.mark.e2e


def test_info_json(train_folder, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = train_folder
    assert main(["info", str(root), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["total"] == 6
    assert stats["themes"]["location"] == {"count": 3, "subthemes": {"rural": 1, "urban": 2}}
    assert stats["themes"]["openve3m"] == {"count": 1, "subthemes": None}
    assert main(["info", str(root)]) == 0
    assert "total" in capsys.readouterr().out


def test_preview_png_and_mp4(train_folder, tmp_path: Path) -> None:
    root, _ = train_folder
    sid = "Sparkle_season_000001"
    assert main(["preview", str(root), "--id", sid, "--out", str(tmp_path / "p.png")]) == 0
    sheet = np.asarray(Image.open(tmp_path / "p.png"))
    assert sheet.shape[0] > 2 * 160 and sheet.shape[2] == 3  # banner + a row per video
    assert main(["preview", str(root), "--id", sid, "--out", str(tmp_path / "p.mp4")]) == 0
    r = VideoReader(tmp_path / "p.mp4")
    assert r.num_frames == 9 and r.width > 2 * r.height * 0.9
    assert (
        main(["preview", str(root), "--id", "Sparkle_season_999999", "--out", str(tmp_path / "x.png")]) == 1
    )


def test_missing_source_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nowhere")]) == 1
    assert "source is neither" in capsys.readouterr().err


def test_demo_pack_export(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--per-theme", "1", "--frames", "9"]) == 0
    ds = load_sparkle(out / "sparkle")
    assert len(ds) == 4 and sorted(p.name for p in (out / "previews").glob("*.mp4")) == sorted(
        f"{i}.mp4" for i in ds["id"]
    )
    assert (out / "previews" / f"{ds[0]['id']}.png").exists()
    assert main(["pack", str(out / "sparkle"), str(tmp_path / "packed"), "--themes", "time"]) == 0
    assert sorted(p.name for p in (tmp_path / "packed").glob("*.tar")) == [
        "time_edited_video_part00.tar",
        "time_source_video_part00.tar",
    ]
    assert main(["export", str(out / "sparkle"), str(tmp_path / "k.csv"), "--format", "kiwi-csv"]) == 0
    assert (tmp_path / "k.csv").read_text().splitlines()[0] == "src_video,tgt_video,prompt"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "{root}", "--themes", "locaton"], "unknown themes ['locaton']"),
        (["pack", "{root}", "{tmp}/p", "--max-shard-gb", "0"], "--max-shard-gb must be positive"),
        (["pack", "{root}", "{tmp}/p", "--max-shard-gb", "-1"], "--max-shard-gb must be positive"),
        (
            ["preview", "{root}", "--id", "Sparkle_season_000000", "--out", "{tmp}/p.webm"],
            "unknown extension",
        ),
        (["demo", "--out", "{tmp}/d", "--per-theme", "0"], "--per-theme must be at least 1"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    train_folder, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    root, _ = train_folder
    args = [a.format(root=root, tmp=tmp_path) for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: ") and message in err and "Traceback" not in err and len(err.splitlines()) == 1
    )
    assert not (tmp_path / "p").exists() and not (tmp_path / "d").exists()


def test_cli_subprocess_prints_no_traceback(train_folder) -> None:
    import subprocess
    import sys

    root, _ = train_folder
    code = "import sys; from sparkle_video.cli import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run(
        [sys.executable, "-c", code, "info", str(root), "--themes", "locaton"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and "error: unknown themes" in r.stderr


def test_preview_gif(train_folder, tmp_path: Path) -> None:
    root, _ = train_folder
    out = tmp_path / "p.gif"
    assert main(["preview", str(root), "--id", "Sparkle_season_000000", "--out", str(out)]) == 0
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.n_frames == 9 and gif.width > 2 * 160 * 0.9


def test_kiwi_csv_from_shards_says_to_extract(train_folder, train_shards, tmp_path: Path, capsys) -> None:
    shards, _ = train_shards
    assert main(["export", str(shards), str(tmp_path / "k.csv"), "--format", "kiwi-csv"]) == 1
    err = capsys.readouterr().err
    assert "tar shards" in err and "extract" in err and not (tmp_path / "k.csv").exists()


def test_datasets_progress_bars_only_with_verbose(train_folder) -> None:
    """A command's stderr carries no ``datasets`` bar by default; ``-v`` (debug logging) brings it back."""
    import subprocess
    import sys

    root, _ = train_folder
    code = "import sys; from sparkle_video.cli import main; sys.exit(main(sys.argv[1:]))"
    quiet = subprocess.run(
        [sys.executable, "-c", code, "info", str(root), "--json"], capture_output=True, text=True
    )
    assert quiet.returncode == 0, quiet.stderr
    assert "Generating train split" not in quiet.stderr and "%|" not in quiet.stderr
    loud = subprocess.run(
        [sys.executable, "-c", code, "-v", "info", str(root), "--json"], capture_output=True, text=True
    )
    assert loud.returncode == 0 and "Generating train split" in loud.stderr


def test_load_sparkle_is_quiet_unless_asked(train_folder, capsys: pytest.CaptureFixture[str]) -> None:
    from sparkle_video import load_sparkle

    root, _ = train_folder
    load_sparkle(root)
    assert "Generating train split" not in capsys.readouterr().err
    load_sparkle(root, progress=True)
    assert "Generating train split" in capsys.readouterr().err
