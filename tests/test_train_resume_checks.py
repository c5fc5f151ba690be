"""What a resume checks before it trusts a checkpoint, and what an allowed change of settings really does
(CPU, tiny model, float32, through the command line)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("accelerate")

from sparkle_video.cli import main
from sparkle_video.data.synthetic import make_demo_records
from sparkle_video.data.writer import write_sparkle
from sparkle_video.pipelines import tiny_pipeline
from sparkle_video.training.loop import checkpoint_dirs, checkpoint_problems, trainable_mismatch

# every test here resets accelerate's process-wide state (bf16 runs must not leak into other tests')
pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("resume-checks")
    records = make_demo_records(1, ("location",), num_frames=5, height=64, width=64, intermediates=False)
    data = Path(write_sparkle(records, root / "data", progress=False).removeprefix("file://"))
    model = root / "model"
    tiny_pipeline(0).save_pretrained(model)
    return {"root": root, "data": data, "model": model}


def argv(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    base = {
        "--data": setup["data"],
        "--model": setup["model"],
        "--out": out,
        "--max-steps": 2,
        "--grad-accum": 1,
        "--checkpointing-steps": 1,
        "--lora-rank": 4,
        "--lr": "1e-2",
        "--report-to": "none",
        "--prefetch": 0,
        "--mixed-precision": "no",
    }
    args = ["train", "--no-gradient-checkpointing"]
    for flag, value in base.items():
        args += [flag, str(value)]
    return args + list(extra)


@pytest.fixture(scope="module")
def done(setup) -> Path:
    """A finished two-step run with a checkpoint after each step."""
    from accelerate.state import AcceleratorState

    out = setup["root"] / "done"
    AcceleratorState._reset_state(reset_partial_state=True)
    assert main(argv(setup, out)) == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    assert [p.name for p in checkpoint_dirs(out)] == ["step-1", "step-2"]
    return out


@pytest.fixture
def copy(done, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(done, out)
    return out


def error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [ln for ln in err.splitlines() if ln.startswith("error:")]


# -- the manifest -------------------------------------------------------------------------------------
def test_manifest_lists_every_file_with_its_size(done: Path) -> None:
    folder = done / "checkpoints" / "step-2"
    files = json.loads((folder / "trainer_state.json").read_text())["files"]
    on_disk = {p.name: p.stat().st_size for p in folder.iterdir() if p.name != "trainer_state.json"}
    assert files == on_disk
    assert {"trainable.safetensors", "optimizer.pt", "lr_scheduler.pt", "rng_rank0.safetensors"} <= set(files)


@pytest.mark.parametrize("victim", ["lr_scheduler.pt", "rng_rank0.safetensors", "state_rank0.json"])
def test_a_file_that_still_opens_but_changed_size_is_caught(copy: Path, victim: str) -> None:
    path = copy / "checkpoints" / "step-2" / victim
    size = path.stat().st_size
    if victim.endswith(".json"):
        path.write_bytes(path.read_bytes() + b"  ")  # still valid JSON: only the size tells
    else:
        path.write_bytes(path.read_bytes()[: size // 2])
    problems = checkpoint_problems(copy / "checkpoints" / "step-2")
    assert problems == [f"{victim}: {path.stat().st_size} bytes, {size} recorded"]


def test_a_missing_file_is_named(copy: Path) -> None:
    (copy / "checkpoints" / "step-2" / "optimizer.pt").unlink()
    assert checkpoint_problems(copy / "checkpoints" / "step-2") == ["optimizer.pt: missing"]


def test_a_manifest_without_sizes_still_opens_every_file(copy: Path) -> None:
    folder = copy / "checkpoints" / "step-2"
    state = json.loads((folder / "trainer_state.json").read_text())
    del state["files"]  # a checkpoint from before the manifest: only opening the files can tell
    (folder / "trainer_state.json").write_text(json.dumps(state))
    assert checkpoint_problems(folder) == []
    (folder / "trainable.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
    problems = checkpoint_problems(folder)
    assert len(problems) == 1 and problems[0].startswith("trainable.safetensors: ")


def test_fallback_warning_names_what_was_skipped_and_why(setup, copy: Path, caplog) -> None:
    victim = copy / "checkpoints" / "step-2" / "rng_rank0.safetensors"
    size = victim.stat().st_size
    victim.write_bytes(victim.read_bytes()[:10])
    with caplog.at_level(logging.INFO, logger="sparkle_video"):
        assert main(argv(setup, copy, "--resume", "--max-steps", "3")) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "skipped 1 damaged checkpoint(s), resuming from step-1: "
        f"step-2 (rng_rank0.safetensors: 10 bytes, {size} recorded)"
    ]
    log = [json.loads(x) for x in (copy / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]  # step 2 redone from step 1, its old log line dropped
    assert [p.name for p in checkpoint_dirs(copy)] == ["step-1", "step-2", "step-3"]
    assert checkpoint_problems(copy / "checkpoints" / "step-2") == []  # rewritten whole


def test_no_intact_checkpoint_is_one_line_naming_each(setup, copy: Path, capsys) -> None:
    for step in ("step-1", "step-2"):
        (copy / "checkpoints" / step / "optimizer.pt").write_bytes(b"")
    assert main(argv(setup, copy, "--resume", "--max-steps", "3")) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith(f"error: no intact checkpoint in {copy / 'checkpoints'}: ")
    assert "step-2 (optimizer.pt: 0 bytes" in lines[0] and "step-1 (optimizer.pt: 0 bytes" in lines[0]


# -- changed settings ---------------------------------------------------------------------------------
def test_each_changed_math_setting_is_named(setup, copy: Path, capsys) -> None:
    changed = [
        "--seed",
        "1",
        "--grad-accum",
        "2",
        "--lr-scheduler",
        "constant",
        "--height",
        "32",
        "--width",
        "32",
    ]
    assert main(argv(setup, copy, "--resume", "--max-steps", "3", *changed)) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1, lines
    for text in (
        "seed: 0 -> 1",
        "gradient_accumulation_steps: 1 -> 2",
        "lr_scheduler: 'kiwi' -> 'constant'",
        "'height': 32",
        "--allow-changed-settings",
    ):
        assert text in lines[0], (text, lines[0])
    assert "learning_rate" not in lines[0] and "lora_rank" not in lines[0]  # only what changed
    assert [p.name for p in checkpoint_dirs(copy)] == ["step-1", "step-2"]  # nothing trained


def test_settings_that_do_not_change_the_math_resume_silently(setup, copy: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="sparkle_video"):
        assert main(argv(setup, copy, "--resume", "--max-steps", "3", "--checkpointing-steps", "5")) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == []


def test_an_allowed_lr_change_is_used_warned_and_recorded(setup, copy: Path, caplog) -> None:
    extra = ["--resume", "--max-steps", "4", "--lr", "5e-3", "--allow-changed-settings"]
    with caplog.at_level(logging.WARNING, logger="sparkle_video"):
        assert main(argv(setup, copy, *extra)) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"resuming {copy / 'checkpoints' / 'step-2'} with changed settings: learning_rate: 0.01 -> 0.005"
    ]
    log = [json.loads(x) for x in (copy / "train_log.jsonl").read_text().splitlines()]
    # kiwi: a third of the rate for the first 5 scheduler steps; the new rate from the resumed step on
    assert [r["lr"] for r in log] == pytest.approx([0.01 / 3, 0.01 / 3, 0.005 / 3, 0.005 / 3], rel=1e-12)
    state = json.loads((copy / "checkpoints" / "step-4" / "trainer_state.json").read_text())
    assert state["settings_changes"] == ["step 2: learning_rate: 0.01 -> 0.005"]
    assert state["config"]["learning_rate"] == 0.005
    groups = torch.load(copy / "checkpoints" / "step-4" / "optimizer.pt", weights_only=True)["param_groups"]
    assert {g["initial_lr"] for g in groups} == {0.005}


def test_an_allowed_rank_change_that_cannot_load_is_one_line(setup, copy: Path, capsys) -> None:
    extra = ["--resume", "--max-steps", "3", "--lora-rank", "8", "--allow-changed-settings"]
    assert main(argv(setup, copy, *extra)) == 1
    lines = error_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"error: {copy / 'checkpoints' / 'step-2'}: its trainable parameters cannot load"
    )
    assert "of another shape, e.g. " in lines[0] and "lora_A.default.weight (4, " in lines[0]
    assert ") -> (8, " in lines[0]


def test_trainable_mismatch_names_missing_extra_and_reshaped() -> None:
    saved = {"a": torch.zeros(4, 2), "b": torch.zeros(3), "gone": torch.zeros(1)}
    current = {"a": torch.zeros(8, 2), "b": torch.zeros(3), "new": torch.zeros(1)}
    assert trainable_mismatch(saved, current) == [
        "1 not in the checkpoint, e.g. new",
        "1 not in this run, e.g. gone",
        "1 of another shape, e.g. a (4, 2) -> (8, 2)",
    ]
    assert trainable_mismatch(saved, dict(saved)) == []
    many = {f"p{i}": torch.zeros(1) for i in range(5)}
    assert trainable_mismatch({}, many, show=2) == ["5 not in the checkpoint, e.g. p0, p1"]
