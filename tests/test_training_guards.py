"""The training recipe against upstream's, and the guards around a run: the run lock, writes kept inside
``--out``, a full disk, damaged checkpoints, changed resume settings, exact outputs (CPU, tiny model)."""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")
pytest.importorskip("accelerate")

from safetensors.torch import load_file

from sparkle_video import SparkleEditPipeline
from sparkle_video.cli import main
from sparkle_video.data.synthetic import make_demo_records
from sparkle_video.data.writer import write_sparkle
from sparkle_video.models import tiny_components
from sparkle_video.pipelines import tiny_pipeline
from sparkle_video.pipelines.convert import convert_checkpoint, load_checkpoint
from sparkle_video.training import TrainConfig, configure_trainable, kiwi_key
from sparkle_video.training.export import as_os_error
from sparkle_video.training.loop import (
    LOCK_NAME,
    TrainingError,
    acquire_lock,
    changed_settings,
    checkpoint_dirs,
    checkpoint_due,
    checkpoint_problems,
    kiwi_warmup_steps,
    launch_problems,
    lr_lambda,
)
from sparkle_video.training.step import NO_GRADIENT_ON_VIDEO, optimized, reference_recipe_note

UPSTREAM_STAGE2 = ("dit.", "mllm.image_queries.q", "mllm.video_queries.q", "mllm.connetor.", "vae_condition.")
LORA = "mllm.model.model.language_model."


def kiwi_prefix(key: str) -> str:
    if key.startswith(LORA):
        return "lora"
    return next((p for p in UPSTREAM_STAGE2 if key == p or key.startswith(p)), key)


# -- the recipe ---------------------------------------------------------------------------------------
def test_default_trainable_set_is_upstreams_stage2() -> None:
    pipe = tiny_pipeline(0)
    names = configure_trainable(pipe, lora_rank=4)
    keys = [kiwi_key(n) for n in names]
    assert {kiwi_prefix(k) for k in keys} == {*UPSTREAM_STAGE2, "lora"}
    assert not any("ref" in k for k in keys)
    dit = len(list(pipe.transformer.parameters()))
    assert len(keys) == dit + 2 + len(list(pipe.mllm_encoder.connector.parameters())) + 2 + 2 * 4 * 2
    # the reference stage, on request
    pipe = tiny_pipeline(0)
    with_ref = {kiwi_key(n) for n in configure_trainable(pipe, lora_rank=4, train_reference=True)}
    extra = {k.split(".")[0] + "." + k.split(".")[1] for k in with_ref - set(keys)}
    assert extra == {"mllm.ref_queries", "mllm.ref_connector", "ref_vae_condition.patch_embedding"} or (
        {k.split(".")[0] for k in with_ref - set(keys)} == {"mllm", "ref_vae_condition"}
    )


def test_reference_training_names_upstreams_query_count() -> None:
    pipe = tiny_pipeline(0)  # 8 reference queries
    assert reference_recipe_note(pipe, train_reference=False) is None
    note = reference_recipe_note(pipe, train_reference=True)
    assert note is not None and "with 8 reference queries" in note and "uses 768" in note
    pipe.mllm_encoder.ref_queries = torch.nn.Parameter(
        torch.zeros(768, pipe.mllm_encoder.ref_queries.shape[1])
    )
    assert reference_recipe_note(pipe, train_reference=True) is None


def test_full_size_trainable_keys_are_upstreams_1121() -> None:
    from sparkle_video.models.configs import full_size_components

    parts = full_size_components("meta")

    class Pipe:  # what configure_trainable touches, on the meta device (no memory)
        transformer, vae = parts["transformer"], parts["vae"]
        mllm_encoder, source_embedder, ref_embedder = (
            parts["mllm_encoder"],
            parts["source_embedder"],
            parts["ref_embedder"],
        )

    keys = [kiwi_key(n) for n in configure_trainable(Pipe, lora_rank=64)]
    assert len(keys) == len(set(keys)) == 1121  # upstream's stage-2 checkpoint, key for key (measured)
    assert sum(k.startswith(LORA) for k in keys) == 36 * 4 * 2
    assert {kiwi_prefix(k) for k in keys} == {*UPSTREAM_STAGE2, "lora"}


def test_unreached_parameters_stay_trainable_but_out_of_the_optimizer() -> None:
    pipe = tiny_pipeline(0)
    names = configure_trainable(pipe, lora_rank=4)
    left_out = [n for n in names if not optimized(n)]
    assert left_out and all(n.startswith(NO_GRADIENT_ON_VIDEO) for n in left_out)
    assert "mllm_encoder.image_queries" in left_out
    assert {n.split(".")[0] for n in left_out} == {"mllm_encoder", "transformer"}


@pytest.mark.parametrize("world", [1, 2, 3, 5, 8])
def test_kiwi_warmup_is_constantlr_over_scheduler_steps(world: int) -> None:
    """accelerate steps the scheduler once per process per optimizer step, as in upstream's run."""
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=3.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("kiwi", 0, 0))
    upstream_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3.0)
    upstream = torch.optim.lr_scheduler.ConstantLR(upstream_opt)  # upstream's defaults
    ours, theirs = [], []
    for _ in range(8):
        ours.append(opt.param_groups[0]["lr"])
        theirs.append(upstream_opt.param_groups[0]["lr"])
        opt.step()
        upstream_opt.step()
        for _ in range(world):
            sched.step()
            upstream.step()
    assert ours == pytest.approx(theirs)
    assert sum(lr < 3.0 for lr in ours) == kiwi_warmup_steps(world) == math.ceil(5 / world)


def test_checkpoint_cadence_counts_micro_batches_like_upstream() -> None:
    cfg = TrainConfig(output_dir="x", max_steps=20, gradient_accumulation_steps=2, checkpointing_steps=5)
    mark, saved = 0, []
    for step in range(1, 21):
        due, mark = checkpoint_due(cfg, step, 2 * step, mark)
        if due:
            saved.append(step)
    assert saved == [
        3,
        5,
        8,
        10,
        13,
        15,
        18,
        20,
    ]  # first optimizer step at/after 5, 10, 15, ... micro-batches
    cfg.checkpoint_unit = "optimizer"
    mark, saved = 0, []
    for step in range(1, 21):
        due, mark = checkpoint_due(cfg, step, 2 * step, mark)
        saved += [step] if due else []
    assert saved == [5, 10, 15, 20]


def test_clipping_default_is_upstreams_effective_value() -> None:
    assert TrainConfig(output_dir="x").max_grad_norm == 1.0
    assert TrainConfig(output_dir="x", max_grad_norm=0).max_grad_norm is None


def test_shipped_deepspeed_config_clips_like_the_recipe() -> None:
    import yaml

    from sparkle_video.training import CONFIG_DIR

    ds = yaml.safe_load(Path(CONFIG_DIR, "deepspeed_zero2_offload.yaml").read_text())
    assert ds["deepspeed_config"]["gradient_clipping"] == TrainConfig(output_dir="x").max_grad_norm
    assert ds["deepspeed_config"]["zero_stage"] == 2


def test_launch_problems_name_the_disagreeing_variables() -> None:
    assert launch_problems(1, {"WORLD_SIZE": "2", "ACCELERATE_NUM_PROCESSES": "2"}) == [
        "WORLD_SIZE=2",
        "ACCELERATE_NUM_PROCESSES=2",
    ]
    assert launch_problems(2, {"WORLD_SIZE": "2"}) == [] and launch_problems(1, {}) == []


def test_changed_settings_names_each() -> None:
    old = {"learning_rate": 1e-5, "lora_rank": 64, "max_steps": 10, "lr_scheduler": "kiwi", "seed": 0}
    new = {**old, "learning_rate": 2e-5, "lora_rank": 8, "max_steps": 20}
    assert changed_settings(old, new) == ["learning_rate: 1e-05 -> 2e-05", "lora_rank: 64 -> 8"]
    assert changed_settings({**old, "lr_scheduler": "cosine"}, {**new, "lr_scheduler": "cosine"})[-1] == (
        "max_steps: 10 -> 20"
    )


# -- the run lock -----------------------------------------------------------------------------------
def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path: Path) -> None:
    import socket

    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "world_size": 1})
    )
    with pytest.raises(TrainingError, match=rf"in use by another trainer \(pid {os.getppid()} on "):
        acquire_lock(out, 1)
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "world_size": 1}))
    path = acquire_lock(out, 2)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert json.loads(path.read_text())["world_size"] == 2


# -- whole runs through the command line --------------------------------------------------------------
# every test here resets accelerate's process-wide state (bf16 runs must not leak into other tests')
pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guards")
    records = make_demo_records(
        1, ("location", "season"), num_frames=5, height=64, width=64, intermediates=False
    )
    data = Path(write_sparkle(records, root / "data", progress=False).removeprefix("file://"))
    model = root / "model"
    tiny_pipeline(0).save_pretrained(model)
    return {"root": root, "data": data, "model": model}


def argv(setup: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(setup["data"]),
        "--model",
        str(setup["model"]),
        "--out",
        str(out),
        "--max-steps",
        "2",
        "--grad-accum",
        "1",
        "--checkpointing-steps",
        "1",
        "--lora-rank",
        "4",
        "--lr",
        "1e-2",
        "--report-to",
        "none",
        "--prefetch",
        "0",
        "--no-gradient-checkpointing",
        *extra,
    ]


@pytest.fixture(scope="module")
def bf16_run(setup) -> Path:
    """Defaults where they matter: bf16 compute on an fp32 base, bf16 folder and export."""
    from accelerate.state import AcceleratorState

    out = setup["root"] / "bf16"
    AcceleratorState._reset_state(reset_partial_state=True)  # module-scoped: before the autouse reset
    assert main(argv(setup, out)) == 0
    AcceleratorState._reset_state(reset_partial_state=True)
    return out


def test_frozen_base_is_bit_identical_in_the_saved_folder(bf16_run: Path) -> None:
    saved = SparkleEditPipeline.from_pretrained(bf16_run / "pipeline")
    base = tiny_pipeline(0)
    for (name, p), (_, q) in zip(saved.vae.state_dict().items(), base.vae.state_dict().items(), strict=True):
        assert p.dtype == q.dtype == torch.float32 and torch.equal(p, q), name
    qwen_saved = saved.mllm_encoder.mllm.state_dict()
    frozen = [
        k
        for k in base.mllm_encoder.mllm.state_dict()
        if not k.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"))
    ]
    assert len(frozen) > 20 and any(k.startswith("model.visual.") for k in frozen)
    for key in frozen:
        q = base.mllm_encoder.mllm.state_dict()[key]
        assert qwen_saved[key].dtype == q.dtype and torch.equal(qwen_saved[key], q), key
    # on disk, what trained is in bf16 (--save-dtype) and differs from the base; the frozen rest is fp32
    dit = load_file(str(next((bf16_run / "pipeline" / "transformer").glob("*.safetensors"))))
    assert {v.dtype for v in dit.values()} == {torch.bfloat16}
    assert not torch.equal(dit["proj_out.weight"].float(), base.transformer.proj_out.weight)
    enc = load_file(str(next((bf16_run / "pipeline" / "mllm_encoder").glob("*.safetensors"))))
    assert enc["video_queries"].dtype == torch.bfloat16
    assert enc["mllm.model.visual.patch_embed.proj.weight"].dtype == torch.float32


def test_kiwi_export_converts_to_exactly_the_saved_folder(bf16_run: Path) -> None:
    ckpt = load_checkpoint(bf16_run / "kiwi" / "model.safetensors")
    lora = [k for k in ckpt if ".lora_" in k]
    assert lora and all(ckpt[k].dtype == torch.float32 for k in lora)  # factors in float32
    assert all(ckpt[k].dtype == torch.bfloat16 for k in ckpt if k not in lora)  # the rest as upstream
    base = tiny_components(0)
    converted, _ = convert_checkpoint(
        ckpt, base["transformer"], base["vae"], base["mllm_encoder"].mllm, tokenizer=base["tokenizer"]
    )
    for name in ("transformer", "mllm_encoder", "source_embedder", "vae"):
        ours = load_file(str(next((bf16_run / "pipeline" / name).glob("*.safetensors"))))  # as on disk
        theirs = getattr(converted, name).state_dict()
        if name == "mllm_encoder":  # not in a stage-2 export (upstream's has none): convert makes fresh ones
            ours = {k: v for k, v in ours.items() if not k.startswith(("ref_queries", "ref_connector."))}
        assert set(ours) <= set(theirs) and len(ours) >= 2, name
        differ = [k for k in ours if not torch.equal(theirs[k].to(ours[k].dtype), ours[k])]
        assert differ == [], (name, differ[:5])


def test_second_trainer_on_the_same_out_is_refused(setup, capsys) -> None:
    import socket

    out = setup["root"] / "locked"
    out.mkdir()
    (out / LOCK_NAME).write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "world_size": 1})
    )
    assert main(argv(setup, out)) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "is in use by another trainer" in err[0] and str(out) in err[0]
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written


@pytest.mark.parametrize("target", ["pipeline", "checkpoints", "train_log.jsonl"])
def test_writes_do_not_leave_out_through_a_symlink(setup, capsys, tmp_path, target: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / target).symlink_to(outside / target if target.endswith(".jsonl") else outside)
    assert main(argv(setup, out)) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "refusing to write" in err[0] and "leads outside" in err[0], err
    assert list(outside.iterdir()) == []
    assert not (out / LOCK_NAME).exists()


def test_full_disk_ends_in_one_line_and_leaves_nothing_trusted(setup, capsys, monkeypatch) -> None:
    import safetensors.torch

    out = setup["root"] / "full-disk"
    real = safetensors.torch.save_file
    calls = {"n": 0}

    def filling(tensors, filename, metadata=None):
        if "step-2.tmp" in str(filename) and filename.endswith("trainable.safetensors"):
            Path(filename).write_bytes(b"\0" * 100)  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        calls["n"] += 1
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", filling)
    assert main(argv(setup, out)) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert lines == [
        f"error: {out}/checkpoints/step-2.tmp/trainable.safetensors: No space left on device (ENOSPC)"
    ]
    assert "Traceback" not in err
    assert [p.name for p in checkpoint_dirs(out)] == ["step-1"]  # the partial one is not a checkpoint
    assert not (out / "pipeline").exists() and not (out / LOCK_NAME).exists()
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert main(argv(setup, out, "--resume")) == 0
    assert [p.name for p in checkpoint_dirs(out)] == ["step-1", "step-2"]


def test_library_write_errors_and_short_writes_become_os_errors(tmp_path: Path) -> None:
    from sparkle_video.training.export import check_safetensors_size, save_tensors

    with pytest.raises(OSError) as raised, as_os_error(tmp_path / "x"):
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")
    assert (raised.value.errno, raised.value.filename) == (errno.ENOSPC, str(tmp_path / "x"))
    path = tmp_path / "w.safetensors"
    save_tensors({"w": torch.arange(100.0)}, path)  # complete: passes the check
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(OSError, match=r"short write \(\d+ of \d+ bytes\)") as short:
        check_safetensors_size(path)
    assert short.value.errno == errno.EIO


# -- resuming ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("damaged", ["trainable.safetensors", "optimizer.pt"])
def test_resume_falls_back_to_the_newest_intact_checkpoint(
    bf16_run, setup, tmp_path, caplog, damaged
) -> None:
    out = tmp_path / "out"
    shutil.copytree(bf16_run, out)
    victim = out / "checkpoints" / "step-2" / damaged
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    assert checkpoint_problems(out / "checkpoints" / "step-2")[0].startswith(f"{damaged}: ")
    assert checkpoint_problems(out / "checkpoints" / "step-1") == []
    with caplog.at_level(logging.INFO, logger="sparkle_video"):
        assert main(argv(setup, out, "--resume", "--max-steps", "3")) == 0
    warning = [r.getMessage() for r in caplog.records if "damaged checkpoint" in r.getMessage()]
    assert len(warning) == 1 and "resuming from step-1" in warning[0] and f"step-2 ({damaged}" in warning[0]
    assert any("resumed from" in r.getMessage() and r.getMessage().endswith("step 1") for r in caplog.records)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]


def test_resume_from_a_named_damaged_checkpoint_is_refused(bf16_run, setup, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(bf16_run, out)
    (out / "checkpoints" / "step-2" / "optimizer.pt").write_bytes(b"")
    assert main(argv(setup, out, "--resume", str(out / "checkpoints" / "step-2"))) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "step-2 is damaged: optimizer.pt: 0 bytes" in lines[0]


def test_resume_with_changed_math_is_refused_naming_each(bf16_run, setup, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(bf16_run, out)
    changed = ["--resume", "--max-steps", "3", "--lr", "5e-3", "--lora-rank", "8", "--batch-size", "2"]
    assert main(argv(setup, out, *changed)) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1
    for text in ("learning_rate: 0.01 -> 0.005", "lora_rank: 4 -> 8", "'batch_size': 2"):
        assert text in lines[0], lines[0]
    assert "--allow-changed-settings" in lines[0]
    assert (
        main(argv(setup, out, "--resume", "--max-steps", "3", "--lr", "5e-3", "--allow-changed-settings"))
        == 0
    )
    state = json.loads((out / "checkpoints" / "step-3" / "trainer_state.json").read_text())
    assert state["settings_changes"] == ["step 2: learning_rate: 0.01 -> 0.005"]
    assert (
        state["files"]["trainable.safetensors"]
        == (out / "checkpoints" / "step-3" / "trainable.safetensors").stat().st_size
    )


def test_log_names_the_pairs_of_each_step(bf16_run) -> None:
    log = [json.loads(x) for x in (bf16_run / "train_log.jsonl").read_text().splitlines()]
    ids = [r["ids"] for r in log]
    assert all(len(i) == 1 and len(i[0]) == 1 for i in ids)  # one rank, one pair per step
    assert len({i[0][0] for i in ids}) == 2
    weights = load_file(str(bf16_run / "checkpoints" / "step-2" / "trainable.safetensors"))
    assert weights and all(v.dtype == torch.float32 for v in weights.values())  # fp32 masters
