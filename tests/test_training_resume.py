"""Resumption: a ``sparkle-video train`` process SIGKILLed after its step-10 checkpoint, resumed, reaches
bit-identical weights, optimizer state and losses at step 20 to an uninterrupted run (CPU, float32)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("accelerate")

from safetensors.torch import load_file

from sparkle_video.data.synthetic import make_demo_records
from sparkle_video.data.writer import write_sparkle
from sparkle_video.pipelines import tiny_pipeline

# End to end (subprocesses, servers, whole runs): in CI, left out of mutation runs (see pyproject.toml).
pytestmark = pytest.mark.e2e


def train_cmd(data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sparkle_video.cli",
        "train",
        "--data",
        str(data),
        "--model",
        str(model),
        "--out",
        str(out),
        "--max-steps",
        "20",
        "--checkpointing-steps",
        "10",
        "--lr",
        "5e-3",
        "--grad-accum",
        "2",
        "--lora-rank",
        "4",
        "--mixed-precision",
        "no",
        "--lr-scheduler",
        "cosine",
        "--lr-warmup-steps",
        "3",
        "--ema-decay",
        "0.9",
        "--shuffle-buffer",
        "4",
        "--max-grad-norm",
        "1.0",
        "--report-to",
        "none",
        "--export-dtype",
        "none",
        "--save-dtype",
        "none",
        "--prefetch",
        "2",
        "--no-gradient-checkpointing",
        *extra,
    ]


def env() -> dict[str, str]:
    # MKL picks kernels by memory alignment unless told otherwise, so two CPU processes differ in the last
    # bits even without any resume; its conditional numerical reproducibility mode removes that.
    e = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1", MKL_CBWR="COMPATIBLE"
    )
    e["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parents[1] / "src"), e.get("PYTHONPATH", "")]
    )
    return e


@pytest.mark.slow
def test_killed_run_resumes_bit_exactly(tmp_path: Path) -> None:
    records = make_demo_records(
        1, ("location", "season", "time"), num_frames=5, height=64, width=64, intermediates=False
    )
    data = Path(write_sparkle(records, tmp_path / "data", progress=False).removeprefix("file://"))
    model = tmp_path / "model"
    tiny_pipeline(0).save_pretrained(model)

    full = subprocess.run(
        train_cmd(data, model, tmp_path / "full"), env=env(), capture_output=True, text=True
    )
    assert full.returncode == 0, full.stderr[-3000:]

    killed = tmp_path / "killed"
    proc = subprocess.Popen(train_cmd(data, model, killed), env=env(), stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # kill as soon as the step-10 checkpoint is reported (no timing involved)
        seen.append(line)
        if "saved checkpoint" in line and line.rstrip().endswith("step-10"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    assert not (killed / "pipeline").exists() and (killed / "checkpoints" / "step-10").is_dir()

    resumed = subprocess.run(
        train_cmd(data, model, killed, "--resume"), env=env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "step-10" in resumed.stderr

    a, b = tmp_path / "full" / "checkpoints" / "step-20", killed / "checkpoints" / "step-20"
    for name in ("trainable.safetensors", "ema.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert set(wa) == set(wb) and len(wa) > 50
        different = [k for k in wa if not torch.equal(wa[k], wb[k])]
        assert different == [], f"{name}: {different[:5]}"
    oa = torch.load(a / "optimizer.pt", weights_only=True)
    ob = torch.load(b / "optimizer.pt", weights_only=True)
    for k, state in oa["state"].items():
        assert all(torch.equal(state[n], ob["state"][k][n]) for n in state)
    for x, y in ((a, b), (a.parent.parent, b.parent.parent)):
        if x.name == "step-20":
            sa = json.loads((x / "state_rank0.json").read_text())
            sb = json.loads((y / "state_rank0.json").read_text())
            assert sa == sb  # step, micro-step, data position and RNG states
    log_a = [json.loads(x) for x in (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()]
    log_b = [json.loads(x) for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == list(range(1, 21))
    assert [(r["loss"], r["lr"]) for r in log_a] == [(r["loss"], r["lr"]) for r in log_b]
    ka, kb = (
        load_file(str(tmp_path / "full" / "kiwi" / "model.safetensors")),
        load_file(str(killed / "kiwi" / "model.safetensors")),
    )
    assert all(torch.equal(ka[k], kb[k]) for k in ka)
