"""``generate run --backends tiny``: the five stages end to end with the tiny model backends, read back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sparkle_video.cli import main
from sparkle_video.data import load_sparkle
from sparkle_video.data.artifacts import SparkleArtifacts
from sparkle_video.data.synthetic import make_pair
from sparkle_video.data.video import write_video
from sparkle_video.generation.backends.registry import load_backend_config

# End to end (subprocesses, servers, whole runs): in CI, left out of mutation runs (see pyproject.toml).
pytestmark = pytest.mark.e2e

FRAMES, HEIGHT, WIDTH = 21, 112, 192


def test_tiny_config_names_the_model_backends():
    config = load_backend_config("tiny")
    names = {role: spec.backend for role, spec in config.backends.items()}
    assert names["image_editor"] == "flux2-klein" and names["image_to_video"] == "wan-i2v"
    assert names["segmenter"] == "sam3" and names["control_video"] == "wan-vace"
    config.check()  # every option key is one the backend takes
    # the classes declare GPUs for real checkpoints; the tiny config places every role on a CPU
    assert all(config.resources(role).num_gpus == 0 for role in config.backends)


def test_generate_run_tiny_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sources = tmp_path / "sources"
    sources.mkdir()
    for n in range(2):
        write_video(make_pair(300 + n, FRAMES, HEIGHT, WIDTH).source, sources / f"clip_{n}.mp4", fps=16)
    out = tmp_path / "out"
    args = [
        "generate",
        "run",
        "--sources",
        str(sources),
        "--out",
        str(out),
        "--backends",
        "tiny",
        "--no-progress",
    ]
    assert main(args) == 0
    assert "published 2 of 2" in capsys.readouterr().out
    run = json.loads((out / "_generation" / "run.json").read_text())
    assert run["config"]["control_video"]["backend"] == "wan-vace"
    ds = load_sparkle(str(out))
    assert len(ds) == 2
    arts = SparkleArtifacts(str(out))
    for row in ds:
        src, edt = row["source_video"], row["edited_video"]
        assert (src.num_frames, src.width, src.height) == (FRAMES, WIDTH, HEIGHT)
        assert (edt.num_frames, edt.width, edt.height) == (FRAMES, WIDTH, HEIGHT)
        mask = arts.get(row["id"], "source_video_mask")
        assert mask.shape == (FRAMES, HEIGHT, WIDTH) and mask.all()  # tiny.yaml keeps every pixel
        edited = edt.get_frames([0, FRAMES - 1])
        assert edited.dtype == np.uint8 and edited.std() > 0
