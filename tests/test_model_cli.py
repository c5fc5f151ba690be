"""`sparkle-video edit` on a saved tiny pipeline, and the pipeline as a Sparkle-Bench editor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_bench

from sparkle_video import VideoReader, load_sparkle_bench, write_video
from sparkle_video.bench import run_inference
from sparkle_video.bench.editors import PipelineEditor
from sparkle_video.cli import main
from sparkle_video.data.synthetic import make_pair
from sparkle_video.pipelines import tiny_pipeline


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pipe")
    tiny_pipeline(seed=0).save_pretrained(out)
    return out


def test_edit_command(saved: Path, tmp_path: Path) -> None:
    clip = make_pair(4, num_frames=10, height=72, width=64).source
    write_video(clip, tmp_path / "in.mp4", fps=16)
    code = main(
        [
            "edit",
            str(tmp_path / "in.mp4"),
            "--prompt",
            "a snowy forest",
            "--model",
            str(saved),
            "--out",
            str(tmp_path / "out.mp4"),
            "--steps",
            "1",
            "--dtype",
            "float32",
            "--device",
            "cpu",
            "--restore-size",
        ]
    )
    assert code == 0
    r = VideoReader(tmp_path / "out.mp4")
    assert (r.num_frames, r.height, r.width, r.fps) == (9, 72, 64, 15.0)


def test_pipeline_as_bench_editor(tmp_path: Path) -> None:
    info = write_bench(tmp_path / "bench", {"season": 2})
    pipe = tiny_pipeline(seed=0)
    pipe.set_progress_bar_config(disable=True)
    editor = PipelineEditor(pipe, num_inference_steps=1)
    report = run_inference(
        load_sparkle_bench(tmp_path / "bench"), editor, tmp_path / "results", progress=False
    )
    outputs = sorted((tmp_path / "results").rglob("*_edited.mp4"))
    assert sorted(p.name for p in outputs) == sorted(f"{i}_edited.mp4" for i in info)
    first = VideoReader(outputs[0])
    assert (first.num_frames, first.height, first.width) == (9, 32, 64)  # 48x64 -> 32x64 model grid
    assert np.isfinite(first.get_frames([0]).astype(float)).all()
    assert "2" in report.summary()
