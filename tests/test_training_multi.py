"""Two training processes on the CPU (gloo), DDP and FSDP2: ranks agree, the data is split without overlap
and nothing is lost, one process writes, and a resumed run ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import json
import os
import socket
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
from sparkle_video.training.loop import LOCK_NAME

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
THEMES = ("location", "season", "time", "style")

#: accelerate's FSDP plugin from the environment (what ``accelerate launch --config_file fsdp.yaml`` sets),
#: with the tiny model's block classes; it runs on the CPU over gloo.
FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_TRANSFORMER_CLS_TO_WRAP": "WanTransformerBlock,Qwen2_5_VLDecoderLayer",
    "FSDP_STATE_DICT_TYPE": "SHARDED_STATE_DICT",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("multi")
    records = make_demo_records(1, THEMES, num_frames=5, height=64, width=64, intermediates=False)
    data = Path(write_sparkle(records, root / "data", progress=False).removeprefix("file://"))
    tiny_pipeline(0).save_pretrained(root / "model")
    return data, root / "model"


def launch(inputs, root: Path, extra_env: dict[str, str]) -> None:
    data, model = inputs
    # ACCELERATE_USE_CPU: without it accelerate ignores torchrun's WORLD_SIZE on a machine with no GPU
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", MKL_CBWR="COMPATIBLE", OMP_NUM_THREADS="1"
    )
    env["ACCELERATE_USE_CPU"] = "true"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")])
    env.update(extra_env)
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(HERE / "training_ranks.py"), str(data), str(model), str(root),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "launcher says" not in done.stderr  # both processes saw a world of 2


def check_run(root: Path, ddp: bool) -> None:
    full, part = root / "full", root / "part"
    log_full = [json.loads(x) for x in (full / "train_log.jsonl").read_text().splitlines()]
    log_part = [json.loads(x) for x in (part / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_full] == [r["step"] for r in log_part] == [1, 2, 3, 4]  # one writer
    assert [(r["loss"], r["lr"], r["ids"]) for r in log_full] == [
        (r["loss"], r["lr"], r["ids"]) for r in log_part
    ]
    # each step is one epoch here (4 pairs = 2 ranks x 2 micro-batches): ranks disjoint, every pair once
    for r in log_full:
        assert len(r["ids"]) == 2 and all(len(rank) == 2 for rank in r["ids"])
        assert not set(r["ids"][0]) & set(r["ids"][1])
        assert len({i for rank in r["ids"] for i in rank}) == len(THEMES)
    a, b = (
        load_file(str(full / "kiwi" / "model.safetensors")),
        load_file(str(part / "kiwi" / "model.safetensors")),
    )
    assert set(a) == set(b) and len(a) > 50
    assert [k for k in a if not torch.equal(a[k], b[k])] == []  # resumed == uninterrupted, bit for bit
    assert not (full / LOCK_NAME).exists() and not (part / LOCK_NAME).exists()
    assert sorted(p.name for p in (part / "checkpoints").iterdir()) == ["step-2", "step-4"]
    files = sorted(p.name for p in (part / "checkpoints" / "step-2").iterdir() if "rng" not in p.name)
    if ddp:  # one copy of the replicated weights and optimizer
        assert (
            "trainable.safetensors" in files and "optimizer.pt" in files and "optimizer_rank0.pt" not in files
        )
    else:  # FSDP: each rank its own shards, nothing gathered
        assert "trainable.safetensors" not in files and "optimizer.pt" not in files
        assert {"trainable_rank0.safetensors", "trainable_rank1.safetensors"} <= set(files)
        assert {"optimizer_rank0.pt", "optimizer_rank1.pt"} <= set(files)
    digests = {p.stem: p.read_text() for p in (root / "digests").glob("*.txt")}
    assert digests["full-step4-rank0"] == digests["part-step4-rank0"]
    if ddp:  # replicated weights: every rank holds the same bits
        assert digests["full-step4-rank0"] == digests["full-step4-rank1"]
        assert digests["part-step4-rank0"] == digests["part-step4-rank1"]
    else:  # sharded: each rank holds its own part, and its part resumed exactly
        assert digests["full-step4-rank0"] != digests["full-step4-rank1"]
        assert digests["full-step4-rank1"] == digests["part-step4-rank1"]


@pytest.mark.slow
def test_two_process_ddp_resumes_bit_identically(inputs, tmp_path: Path) -> None:
    launch(inputs, tmp_path, {})
    check_run(tmp_path, ddp=True)


@pytest.mark.slow
def test_two_process_fsdp_resumes_bit_identically(inputs, tmp_path: Path) -> None:
    # with an EMA: its shadow weights are sharded too, and the export is made from them
    launch(inputs, tmp_path, {**FSDP_ENV, "TRAIN_EXTRA_ARGS": "--ema-decay 0.9"})
    check_run(tmp_path, ddp=False)
    files = {p.name for p in (tmp_path / "part" / "checkpoints" / "step-2").iterdir()}
    assert {"ema_rank0.safetensors", "ema_rank1.safetensors", "ema.json"} <= files
