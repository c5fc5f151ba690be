"""The training loop on ``accelerate``: precision, accumulation, clipping, LR schedule, EMA, logging,
exactly resumable checkpoints, and the two outputs (a pipeline folder and a Kiwi-Edit checkpoint).

Reproducibility: the timestep and noise of every micro-batch come from a generator seeded by
``(seed, rank, micro-step)``, so they do not depend on what ran before; checkpoints hold the trainable
weights, the optimizer and LR-scheduler states, the global RNG states and the data stream's position,
so a resumed run continues with the same batches and reaches the same weights (bit for bit on CPU in
float32). Checkpoints are written without pickles (safetensors, JSON, and ``torch.save`` of plain
tensor/number state read back with ``weights_only=True``). Under FSDP each rank writes its own shards
of the trainable weights and optimizer state in the same formats (``trainable_rank{r}.safetensors``,
``optimizer_rank{r}.pt``), so nothing is gathered and nothing pickled; a resume needs the same world
size, which is checked. Under DeepSpeed the engine's own checkpoint (``accelerator.save_state``) holds
the model and optimizer instead.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
import os
import random
import shutil
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import safe_write
from ..errors import SkipReport
from .data import prefetch
from .export import as_os_error, lora_scaling_of, pipeline_from_state, save_kiwi_checkpoint, save_tensors
from .step import (
    LORA_RANK,
    LORA_TARGETS,
    SparkleTrainingModule,
    configure_trainable,
    optimized,
    reference_recipe_note,
    trainable_modules,
)

logger = logging.getLogger("sparkle_video")

LR_SCHEDULES = ("kiwi", "constant", "constant_with_warmup", "linear", "cosine")
CHECKPOINT_UNITS = ("micro", "optimizer")
CHECKPOINT_PREFIX = "step-"
LOCK_NAME = ".train.lock"

#: ``TrainConfig`` fields that change the math of a run: a resume that changes one is refused (one line
#: naming each) unless ``allow_changed_settings``. ``max_steps`` counts only where the schedule uses it.
MATH_SETTINGS = (
    "learning_rate",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "gradient_accumulation_steps",
    "max_grad_norm",
    "lr_scheduler",
    "lr_warmup_steps",
    "mixed_precision",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
    "train_reference",
    "ema_decay",
    "seed",
    "data_settings",
)


class TrainingError(RuntimeError):
    """A run that cannot start or continue as asked (a locked ``--out``, a broken or mismatched
    checkpoint, a write leaving ``--out``); the message is one line naming the path or settings."""


@dataclass
class TrainConfig:
    """Settings of a run. Defaults are the Kiwi-Edit Wan2.2-5B recipe where it has one.

    ``lr_scheduler="kiwi"`` reproduces upstream's ``torch.optim.lr_scheduler.ConstantLR`` with its
    defaults under accelerate: a third of the learning rate for 5 *scheduler* steps, and accelerate steps
    the scheduler once per process per optimizer step, so that is ``ceil(5 / processes)`` optimizer
    steps; the other names are diffusers' schedules with ``lr_warmup_steps`` of linear warm-up.
    ``max_grad_norm=1.0`` is upstream's effective clipping (its DeepSpeed config's ``gradient_clipping:
    "auto"`` resolves to accelerate's 1.0); ``None`` clips nothing. ``checkpoint_unit="micro"`` counts
    ``checkpointing_steps`` in micro-batches as upstream's ``save_steps`` does (a checkpoint at the first
    optimizer step at or after each multiple); ``"optimizer"`` counts optimizer steps.
    ``train_reference`` also trains the reference-image parts (upstream's stage 2 does not).
    ``data_settings`` (batch size, sizes, filters) is recorded with each checkpoint and compared on resume.
    """

    output_dir: str
    max_steps: int = 10_000
    learning_rate: float = 1e-5
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    gradient_accumulation_steps: int = 2
    max_grad_norm: float | None = 1.0
    lr_scheduler: str = "kiwi"
    lr_warmup_steps: int = 0
    mixed_precision: str = "bf16"
    gradient_checkpointing: bool = True
    encoder_gradient_checkpointing: bool = False
    lora_rank: int | None = LORA_RANK
    lora_alpha: float | None = None
    lora_targets: tuple[str, ...] = LORA_TARGETS
    train_reference: bool = False
    ema_decay: float | None = None
    checkpointing_steps: int = 500
    checkpoint_unit: str = "micro"
    checkpoints_total_limit: int | None = None
    seed: int = 0
    report_to: str | None = "auto"
    prefetch: int = 2
    export_dtype: str | None = "bfloat16"
    save_dtype: str | None = "bfloat16"
    resume: bool | str = False
    allow_changed_settings: bool = False
    data_settings: dict[str, Any] = field(default_factory=dict)
    project_name: str = "sparkle-video"

    def __post_init__(self) -> None:
        if self.lr_scheduler not in LR_SCHEDULES:
            raise ValueError(f"lr_scheduler must be one of {LR_SCHEDULES}, got {self.lr_scheduler!r}")
        if self.checkpoint_unit not in CHECKPOINT_UNITS:
            raise ValueError(
                f"checkpoint_unit must be one of {CHECKPOINT_UNITS}, got {self.checkpoint_unit!r}"
            )
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            self.max_grad_norm = None  # 0 on the command line: no clipping
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError("mixed_precision must be 'no', 'bf16' or 'fp16'")
        if self.max_steps < 1 or self.gradient_accumulation_steps < 1 or self.checkpointing_steps < 1:
            raise ValueError("max_steps, gradient_accumulation_steps and checkpointing_steps must be >= 1")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ValueError("ema_decay must be in (0, 1)")
        self.lora_targets = tuple(self.lora_targets)


@dataclass
class TrainResult:
    """What a run produced."""

    steps: int
    pipeline_dir: str
    kiwi_checkpoint: str
    log_path: str
    last_loss: float
    skipped: list[tuple[str, str]] = field(default_factory=list)


# -- small pure helpers -------------------------------------------------------------------------
def micro_step_seed(seed: int, rank: int, micro_step: int) -> int:
    """A 63-bit seed for one micro-batch's timestep and noise (independent of everything before it)."""
    return int(np.random.SeedSequence([seed, rank, micro_step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def lr_lambda(schedule: str, warmup: int, total: int):
    """The LR multiplier per *scheduler* step for ``schedule`` (see ``TrainConfig``); accelerate steps the
    scheduler once per process per optimizer step, so ``warmup``/``total`` are given in scheduler steps
    (``kiwi`` ignores both: upstream's ``ConstantLR()`` holds for 5 scheduler steps whatever the world)."""
    if schedule == "kiwi":
        return _KiwiConstant(5)
    return _Warmup(schedule, warmup, total)


def kiwi_warmup_steps(world_size: int) -> int:
    """Optimizer steps at a third of the learning rate under ``kiwi``: ``ceil(5 / processes)``, as upstream."""
    return math.ceil(5 / max(1, world_size))


def checkpoint_due(config: TrainConfig, step: int, micro_step: int, last_mark: int) -> tuple[bool, int]:
    """Whether the optimizer step just finished (``step``, after ``micro_step`` micro-batches) saves a
    checkpoint, and the new mark (the multiple of ``checkpointing_steps`` reached)."""
    count = micro_step if config.checkpoint_unit == "micro" else step
    mark = count // config.checkpointing_steps
    return (mark > last_mark or step == config.max_steps), max(mark, last_mark)


def changed_settings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``MATH_SETTINGS`` (and ``max_steps`` under ``linear``/``cosine``) that differ: ``name: old -> new``."""
    names = list(MATH_SETTINGS)
    if current.get("lr_scheduler") in ("linear", "cosine"):
        names.append("max_steps")
    out = []
    for name in names:
        old, new = saved.get(name), current.get(name)
        if isinstance(old, (list, tuple)) or isinstance(new, (list, tuple)):
            old, new = list(old or []), list(new or [])
        if old != new:
            out.append(f"{name}: {old!r} -> {new!r}")
    return out


class _KiwiConstant:
    """``ConstantLR()``'s defaults: factor 1/3 for the first 5 scheduler steps, then 1."""

    def __init__(self, steps: int = 5):
        self.steps = steps

    def __call__(self, step: int) -> float:
        return 1.0 / 3.0 if step < self.steps else 1.0


class _Warmup:
    def __init__(self, schedule: str, warmup: int, total: int):
        self.schedule, self.warmup, self.total = schedule, warmup, max(total, 1)

    def __call__(self, step: int) -> float:
        if self.schedule == "constant":
            return 1.0
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1) if self.warmup else 1.0
        if self.schedule == "constant_with_warmup":
            return 1.0
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        if self.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def checkpoint_dirs(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [
        p
        for p in root.iterdir()
        if p.name.startswith(CHECKPOINT_PREFIX)
        and p.name[len(CHECKPOINT_PREFIX) :].isdigit()
        and (p / "trainer_state.json").exists()
    ]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))


def inside(out: str | os.PathLike, target: str | os.PathLike) -> Path:
    """``target`` (under ``out``) if it resolves inside ``out``; a one-line ``TrainingError`` if a symlink
    (of ``target`` or a folder on the way) leads out of it. Called before every training-output write."""
    try:
        return safe_write.inside(out, target)
    except safe_write.SparkleWriteError as e:
        raise TrainingError(str(e)) from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def acquire_lock(out: str | os.PathLike, world_size: int) -> Path:
    """Take ``out/.train.lock`` (pid, host, world size) or refuse with one line naming its holder.

    A lock left by a process that no longer runs on this host (a SIGKILLed run) is taken over with a
    warning; one held by a live process, or by another host, is refused: two trainers on one folder
    would write the same log and checkpoints.
    """
    path = inside(out, Path(out) / LOCK_NAME)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "world_size": world_size}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            try:
                held = json.loads(path.read_text())
            except (OSError, ValueError):
                held = {}
            pid, host = held.get("pid"), held.get("host")
            if host == me["host"] and isinstance(pid, int) and not _pid_alive(pid):
                logger.warning("taking over the lock of a stopped run (pid %s) in %s", pid, out)
                path.unlink(missing_ok=True)
                continue
            raise TrainingError(
                f"{out} is in use by another trainer (pid {pid} on {host}, world size "
                f"{held.get('world_size')}); stop it, or remove {path} if it is gone"
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise TrainingError(f"could not take the lock {path}")


def launch_problems(world_size: int, env: dict[str, str] | None = None) -> list[str]:
    """What the environment says about the launch that this process's world size contradicts.

    ``accelerate launch --num_processes 2 --cpu`` (without ``--multi_cpu``) starts one process that
    believes it is alone; so does a script started twice by hand. The launchers' variables tell.
    """
    env = dict(os.environ if env is None else env)
    said = {
        name: env[name]
        for name in ("WORLD_SIZE", "ACCELERATE_NUM_PROCESSES", "OMPI_COMM_WORLD_SIZE", "SLURM_NTASKS")
        if env.get(name, "").strip().isdigit()
    }
    return [f"{name}={value}" for name, value in said.items() if int(value) != world_size]


def file_manifest(folder: Path) -> dict[str, int]:
    """Sizes of every file under ``folder`` (relative POSIX paths), ``trainer_state.json`` excepted."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "trainer_state.json"
    }


def checkpoint_problems(folder: Path) -> list[str]:
    """Why the checkpoint ``folder`` cannot be trusted (empty: intact). Sizes are checked against the
    manifest recorded at save time, and every file we wrote must open (safetensors header, JSON, tensors)."""
    try:
        top = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError) as e:
        return [f"trainer_state.json: {e}"]
    problems = []
    recorded = top.get("files")
    if recorded is not None:
        for name, size in recorded.items():
            f = folder / name
            if not f.is_file():
                problems.append(f"{name}: missing")
            elif f.stat().st_size != size:
                problems.append(f"{name}: {f.stat().st_size} bytes, {size} recorded")
    if problems:
        return problems
    for f in sorted(folder.iterdir()):
        try:
            if f.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(f), framework="pt") as h:
                    for key in h.keys():  # noqa: SIM118 - safe_open has no __iter__
                        h.get_slice(key)
            elif f.suffix == ".json":
                json.loads(f.read_text())
            elif f.suffix == ".pt":
                torch.load(f, map_location="cpu", weights_only=True)
        except Exception as e:
            problems.append(f"{f.name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return problems


def trainable_mismatch(saved: dict[str, Any], current: dict[str, Any], show: int = 3) -> list[str]:
    """Why checkpoint tensors ``saved`` cannot be copied into parameters ``current`` (empty: they can):
    names on one side only, and shapes that differ (a changed LoRA rank), a few of each named."""
    problems = []
    missing, extra = sorted(set(current) - set(saved)), sorted(set(saved) - set(current))
    if missing:
        problems.append(f"{len(missing)} not in the checkpoint, e.g. {', '.join(missing[:show])}")
    if extra:
        problems.append(f"{len(extra)} not in this run, e.g. {', '.join(extra[:show])}")
    shapes = [
        f"{n} {tuple(saved[n].shape)} -> {tuple(current[n].shape)}"
        for n in sorted(set(saved) & set(current))
        if tuple(saved[n].shape) != tuple(current[n].shape)
    ]
    if shapes:
        problems.append(f"{len(shapes)} of another shape, e.g. {', '.join(shapes[:show])}")
    return problems


def _fsync_tree(folder: Path) -> None:
    for f in folder.rglob("*"):
        if f.is_file():
            with open(f, "rb") as h:
                os.fsync(h.fileno())


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished folder into place: a reader sees the old one or the new one, never half of one."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def available_trackers(report_to: str | None) -> list[str]:
    """accelerate trackers to use: ``"auto"`` means tensorboard when it is installed (wandb only on request)."""
    if not report_to or report_to == "none":
        return []
    if report_to == "auto":
        return ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
    names = ["tensorboard", "wandb"] if report_to == "all" else [n.strip() for n in report_to.split(",")]
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        raise ValueError(f"report_to asks for {missing}, which are not installed")
    return names


def make_accelerator(config: TrainConfig) -> Any:
    """The ``Accelerator`` of a run (processes, DeepSpeed/FSDP come from ``accelerate launch``/``config``)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    trackers = available_trackers(config.report_to)
    return Accelerator(
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        mixed_precision=config.mixed_precision,
        log_with=trackers or None,
        project_dir=config.output_dir,
        # image/reference queries and the DiT's bypassed text projection get no gradient on video pairs
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


# -- RNG and checkpoint state ---------------------------------------------------------------------
def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Global RNG states as (JSON-able dict, tensors)."""
    py = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    return meta, tensors


def set_rng_state(meta: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's part of an FSDP2 parameter or state (a ``DTensor``); any other tensor as it is."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def localized_optimizer_state(state: dict[str, Any]) -> dict[str, Any]:
    """An optimizer ``state_dict()`` with every ``DTensor`` replaced by this rank's shard: plain tensors,
    numbers and lists only, which ``torch.load(weights_only=True)`` reads back without unpickling code."""
    return {
        "state": {i: {k: local_shard(v) for k, v in s.items()} for i, s in state["state"].items()},
        "param_groups": state["param_groups"],
    }


def distributed_tensors(shards: list[torch.Tensor], like: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each saved shard as a ``DTensor`` laid out like the matching FSDP2 tensor of ``like``; a shard whose
    partner is not a ``DTensor``, or is not of its shard's shape (a scalar step count), stays as it is."""
    from torch.distributed.tensor import DTensor

    out = []
    for shard, param in zip(shards, like, strict=True):
        if isinstance(param, DTensor) and shard.ndim and tuple(shard.shape) == tuple(param.to_local().shape):
            shard = DTensor.from_local(
                shard, param.device_mesh, param.placements, shape=param.shape, stride=param.stride()
            )
        out.append(shard)
    return out


def distributed_optimizer_state(state: dict[str, Any], params: list[torch.Tensor]) -> dict[str, Any]:
    """The inverse of :func:`localized_optimizer_state` for the optimizer's ``params`` (in its order)."""
    restored = {}
    for index, entries in state["state"].items():
        keys = list(entries)
        param = params[int(index)]
        values = distributed_tensors([entries[k] for k in keys], [param] * len(keys))
        restored[index] = dict(zip(keys, values, strict=True))
    return {"state": restored, "param_groups": state["param_groups"]}


# -- the run -------------------------------------------------------------------------------------
class Trainer:
    """One training run; ``run()`` trains to ``max_steps`` and writes the outputs.

    Args:
        pipe: a ``SparkleEditPipeline`` (random, loaded, or a Kiwi-Edit conversion) to fine-tune.
        stream: an iterable of ``(batch, position)`` with ``state_dict()/load_state_dict()``, e.g.
            ``BucketedPairStream`` (one per rank: each rank reads its own split).
        config: the run's settings.
        accelerator: an ``accelerate.Accelerator``; by default one is made from ``config`` (and
            whatever ``accelerate launch`` / ``accelerate config`` set: processes, DeepSpeed, FSDP).
    """

    def __init__(self, pipe: Any, stream: Any, config: TrainConfig, accelerator: Any = None):
        self.config = config
        self.stream = stream
        self.out = Path(config.output_dir)
        self.accelerator = accelerator or make_accelerator(config)
        acc = self.accelerator
        self.rank = acc.process_index
        self.engine = acc.distributed_type.value == "DEEPSPEED"  # DeepSpeed checkpoints itself
        self.sharded = acc.distributed_type.value == "FSDP"  # each rank saves its own shards
        self.trackers = bool(getattr(acc, "log_with", None))  # the accelerator decides (ours or a given one)
        from accelerate.utils import set_seed

        set_seed(config.seed)  # the LoRA's initial A factors come from the global RNG
        problems = launch_problems(acc.num_processes)
        if problems:
            logger.warning(
                "this process sees a world of %d but the launcher says %s: check --num_processes and "
                "--multi_cpu/--cpu (a CPU run of N processes needs `accelerate launch --multi_cpu`)",
                acc.num_processes,
                ", ".join(problems),
            )
        self.trainable_names = configure_trainable(
            pipe, config.lora_rank, config.lora_alpha, config.lora_targets, config.train_reference
        )
        note = reference_recipe_note(pipe, config.train_reference)
        if note:
            logger.warning("%s", note)
        if config.gradient_checkpointing:
            pipe.transformer.enable_gradient_checkpointing()
        if config.encoder_gradient_checkpointing:
            pipe.mllm_encoder.mllm.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
        for p in trainable_modules(pipe).parameters():  # fp32 master weights, whatever dtype was loaded
            if p.requires_grad and p.dtype != torch.float32:
                p.data = p.data.float()
        compute = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision, torch.float32)
        # frozen weights as loaded, kept (by reference, no copy) where they are cast below, so that the
        # saved folder holds the base bit for bit rather than a compute-dtype rounding of it
        self.base_vae = pipe.vae
        if pipe.vae.dtype != compute:  # frozen: used in the compute dtype, as upstream
            pipe.vae = copy.deepcopy(pipe.vae).to(dtype=compute)
        pipe.vae.to(acc.device)
        self.frozen_originals: dict[str, torch.Tensor] = {}
        for name, p in pipe.mllm_encoder.named_parameters():
            if not p.requires_grad and p.dtype != compute:
                self.frozen_originals[f"mllm_encoder.{name}"] = p.data
                p.data = p.data.to(compute)
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        module = SparkleTrainingModule(
            pipe, timestep_dtype=compute if config.mixed_precision == "bf16" else torch.float32
        )
        self.lora_scaling = lora_scaling_of(module)
        self.unoptimized = [n for n, p in module.named_parameters() if p.requires_grad and not optimized(n)]
        params = [p for n, p in module.named_parameters() if p.requires_grad and optimized(n)]
        optimizer = self._optimizer(params)
        world = acc.num_processes
        schedule = lr_lambda(config.lr_scheduler, config.lr_warmup_steps * world, config.max_steps * world)
        lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        self.module, self.optimizer, self.lr_scheduler = acc.prepare(module, optimizer, lr_scheduler)
        self.ema = None
        if config.ema_decay is not None:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(
                [p for p in self.module.parameters() if p.requires_grad], decay=config.ema_decay
            )
        self.step = 0
        self.micro_step = 0
        self.checkpoint_mark = 0
        self.settings_changes: list[str] = []
        self.data_position = stream.state_dict()  # of the last batch *used* (the stream reads ahead)
        self.log_path = self.out / "train_log.jsonl"

    def _optimizer(self, params: list[torch.nn.Parameter]) -> Any:
        cfg = self.config
        kwargs = {
            "lr": cfg.learning_rate,
            "weight_decay": cfg.weight_decay,
            "betas": (cfg.adam_beta1, cfg.adam_beta2),
            "eps": cfg.adam_epsilon,
        }
        plugin = self.accelerator.state.deepspeed_plugin
        if plugin is not None:
            ds = plugin.deepspeed_config
            clip = ds.get("gradient_clipping", "auto")
            if clip not in ("auto", None) and float(clip or 0) != float(cfg.max_grad_norm or 0):
                raise TrainingError(
                    f"the DeepSpeed config clips gradients at {clip} but max_grad_norm is "
                    f"{cfg.max_grad_norm}: make them agree (DeepSpeed does the clipping)"
                )
            if "optimizer" in ds:  # the DeepSpeed config names its own optimizer
                from accelerate.utils.deepspeed import DummyOptim

                return DummyOptim(params, **kwargs)
            if ds.get("zero_optimization", {}).get("offload_optimizer", {}).get("device") == "cpu":
                # ZeRO-Offload steps on the CPU: DeepSpeed's vectorised AdamW, same update as torch's
                from deepspeed.ops.adam import DeepSpeedCPUAdam

                return DeepSpeedCPUAdam(params, adamw_mode=True, **kwargs)
        return torch.optim.AdamW(params, **kwargs)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        final = inside(self.out, self.out / "checkpoints" / f"{CHECKPOINT_PREFIX}{self.step}")
        tmp = inside(self.out, final.with_name(final.name + ".tmp"))
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        if self.engine:
            acc.save_state(str(tmp / "engine"))
        elif self.sharded:
            weights = {
                k: local_shard(v).detach().cpu().contiguous()
                for k, v in trainable_state(acc.unwrap_model(self.module)).items()
            }
            save_tensors(weights, tmp / f"trainable_rank{self.rank}.safetensors")
            torch.save(
                localized_optimizer_state(self.optimizer.state_dict()), tmp / f"optimizer_rank{self.rank}.pt"
            )
        elif acc.is_main_process:
            weights = {
                k: v.detach().cpu().contiguous()
                for k, v in trainable_state(acc.unwrap_model(self.module)).items()
            }
            save_tensors(weights, tmp / "trainable.safetensors")
            torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        if self.ema is not None and (self.sharded or acc.is_main_process):
            ema = self.ema.state_dict()
            shadow = ema.pop("shadow_params")
            save_tensors(
                {str(i): local_shard(t).detach().cpu().contiguous() for i, t in enumerate(shadow)},
                tmp / f"ema{self._shard_suffix()}.safetensors",
            )
            if acc.is_main_process:
                (tmp / "ema.json").write_text(json.dumps(ema))
        if acc.is_main_process:
            torch.save(self.lr_scheduler.state_dict(), tmp / "lr_scheduler.pt")
        meta, tensors = rng_state()
        save_tensors(tensors, tmp / f"rng_rank{self.rank}.safetensors")
        rank_state = {
            "step": self.step,
            "micro_step": self.micro_step,
            "data": self.data_position,
            "rng": meta,
        }
        (tmp / f"state_rank{self.rank}.json").write_text(json.dumps(rank_state))
        acc.wait_for_everyone()
        if acc.is_main_process:
            # the manifest (every file's size) is written last: a resume trusts nothing it does not list
            _fsync_tree(tmp)
            (tmp / "trainer_state.json").write_text(
                json.dumps(
                    {
                        "step": self.step,
                        "world_size": acc.num_processes,
                        "config": _jsonable(asdict(self.config)),
                        "settings_changes": self.settings_changes,
                        "files": file_manifest(tmp),
                    },
                    indent=1,
                )
            )
            _fsync_tree(tmp)
            _replace_dir(tmp, final)
            limit = self.config.checkpoints_total_limit
            if limit:
                for old in checkpoint_dirs(self.out)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        logger.info("saved checkpoint %s", final)
        return final

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        from safetensors.torch import load_file

        acc = self.accelerator
        path = Path(path)
        top = json.loads((path / "trainer_state.json").read_text())
        if top["world_size"] != acc.num_processes:
            raise TrainingError(
                f"{path} was written by {top['world_size']} processes; this run has {acc.num_processes}"
            )
        changed = changed_settings(top.get("config", {}), _jsonable(asdict(self.config)))
        if changed and not self.config.allow_changed_settings:
            raise TrainingError(
                f"{path} was trained with other settings ({'; '.join(changed)}); "
                "use the same ones, or --allow-changed-settings"
            )
        if changed:
            logger.warning("resuming %s with changed settings: %s", path, "; ".join(changed))
        self.settings_changes = [
            *top.get("settings_changes", []),
            *(f"step {top['step']}: {c}" for c in changed),
        ]
        if self.engine:
            acc.load_state(str(path / "engine"))
        else:
            suffix = self._shard_suffix()
            weights = load_file(str(path / f"trainable{suffix}.safetensors"))
            params = {n: local_shard(p) for n, p in trainable_state(acc.unwrap_model(self.module)).items()}
            problems = trainable_mismatch(weights, params)
            if problems:  # a changed rank or target list, allowed by --allow-changed-settings
                raise TrainingError(
                    f"{path}: its trainable parameters cannot load into this run's ({'; '.join(problems)})"
                )
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(weights[name])
            optimizer_state = torch.load(
                path / f"optimizer{suffix}.pt", map_location="cpu", weights_only=True
            )
            if self.sharded:
                order = [p for group in self.optimizer.param_groups for p in group["params"]]
                optimizer_state = distributed_optimizer_state(optimizer_state, order)
            self.optimizer.load_state_dict(optimizer_state)
        self.lr_scheduler.load_state_dict(torch.load(path / "lr_scheduler.pt", weights_only=True))
        if changed:  # the loaded states carry the checkpoint's hyperparameters: put this run's back
            self._apply_hyperparameters()
        if self.ema is not None:
            ema = json.loads((path / "ema.json").read_text())
            shadow = load_file(str(path / f"ema{self._shard_suffix()}.safetensors"))
            ema["shadow_params"] = [shadow[str(i)] for i in range(len(shadow))]
            if self.sharded:  # each shard back into a DTensor laid out like its parameter
                like = [p for p in self.module.parameters() if p.requires_grad]
                ema["shadow_params"] = distributed_tensors(ema["shadow_params"], like)
            self.ema.load_state_dict(ema)
            self.ema.to(acc.device)
        state = json.loads((path / f"state_rank{self.rank}.json").read_text())
        self.step, self.micro_step = int(state["step"]), int(state["micro_step"])
        self.checkpoint_mark = checkpoint_due(self.config, self.step, self.micro_step, 0)[1]
        self.data_position = state["data"]
        self.stream.load_state_dict(state["data"])
        set_rng_state(state["rng"], load_file(str(path / f"rng_rank{self.rank}.safetensors")))
        if (
            acc.is_main_process and inside(self.out, self.log_path).exists()
        ):  # drop log lines of steps the resumed run redoes
            lines = [ln for ln in self.log_path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln).get("step", 0) <= self.step]
            self.log_path.write_text("".join(ln + "\n" for ln in kept))
        logger.info("resumed from %s at step %d", path, self.step)

    def _shard_suffix(self) -> str:
        """``_rank{r}`` for the files each FSDP rank writes of its own shards; empty otherwise."""
        return f"_rank{self.rank}" if self.sharded else ""

    def _apply_hyperparameters(self) -> None:
        """Set this run's learning rate, schedule and AdamW settings on the optimizer and LR scheduler.

        ``load_state_dict`` restores the checkpoint's (param groups, base rates, even the schedule's
        warm-up object), so without this an allowed change of ``--lr`` would be recorded but not used.
        The schedule continues from the step reached: the new rate times the new schedule's factor there.
        """
        cfg, world = self.config, self.accelerator.num_processes
        inner = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)
        groups = self.optimizer.param_groups
        schedule = lr_lambda(cfg.lr_scheduler, cfg.lr_warmup_steps * world, cfg.max_steps * world)
        inner.lr_lambdas = [copy.deepcopy(schedule) for _ in groups]
        inner.base_lrs = [cfg.learning_rate for _ in groups]
        for group, factor in zip(groups, inner.lr_lambdas, strict=True):
            group["initial_lr"] = cfg.learning_rate
            group["lr"] = cfg.learning_rate * factor(inner.last_epoch)
            group["weight_decay"] = cfg.weight_decay
            group["betas"] = (cfg.adam_beta1, cfg.adam_beta2)
            group["eps"] = cfg.adam_epsilon
        inner._last_lr = [group["lr"] for group in groups]

    def _resume_path(self) -> Path | None:
        r = self.config.resume
        if not r:
            return None
        if isinstance(r, str) and r not in ("latest", "true", "True"):
            problems = checkpoint_problems(Path(r))
            if problems:
                raise TrainingError(f"checkpoint {r} is damaged: {'; '.join(problems)}")
            return Path(r)
        found = checkpoint_dirs(self.out)
        if not found:
            logger.info("no checkpoint in %s: starting from step 0", self.out / "checkpoints")
            return None
        skipped = []
        for candidate in reversed(found):
            problems = checkpoint_problems(candidate)
            if not problems:
                if skipped:
                    logger.warning(
                        "skipped %d damaged checkpoint(s), resuming from %s: %s",
                        len(skipped),
                        candidate.name,
                        " | ".join(skipped),
                    )
                return candidate
            skipped.append(f"{candidate.name} ({'; '.join(problems)})")
        raise TrainingError(f"no intact checkpoint in {self.out / 'checkpoints'}: {' | '.join(skipped)}")

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train to ``max_steps`` holding ``out/.train.lock``; write the outputs."""
        acc = self.accelerator
        self.out.mkdir(parents=True, exist_ok=True)
        for name in ("train_log.jsonl", "checkpoints", "pipeline", "kiwi", LOCK_NAME):
            inside(self.out, self.out / name)  # refuse a linked-out target before any work
        lock = acquire_lock(self.out, acc.num_processes) if acc.is_main_process else None
        try:
            return self._run()
        finally:
            if lock is not None:
                lock.unlink(missing_ok=True)

    def _run(self) -> TrainResult:
        from tqdm.auto import tqdm

        cfg, acc = self.config, self.accelerator
        resume = self._resume_path()
        if resume is not None:
            self.load_checkpoint(resume)
        if self.trackers:
            hparams = {k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))}
            acc.init_trackers(cfg.project_name, config=hparams)
        params = [p for p in self.module.parameters() if p.requires_grad]
        log = open(self.log_path, "a") if acc.is_main_process else None  # noqa: SIM115 - closed below
        bar = tqdm(
            total=cfg.max_steps, initial=self.step, desc="training", disable=not acc.is_local_main_process
        )
        losses: list[torch.Tensor] = []
        step_ids: list[str] = []
        last_loss = float("nan")
        skipped_seen = len(getattr(self.stream, "skip_report", SkipReport()))
        data = prefetch(self.stream, cfg.prefetch)
        try:
            for batch, position in data:
                if self.step >= cfg.max_steps:
                    break
                generator = torch.Generator().manual_seed(
                    micro_step_seed(cfg.seed, self.rank, self.micro_step)
                )
                with acc.accumulate(self.module):
                    out = self.module(batch, generator=generator)
                    loss = out["loss"]
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"non-finite loss at step {self.step} on {batch['id']}")
                    acc.backward(loss)
                    if acc.sync_gradients and not self.engine:
                        self._check_unoptimized()
                    if acc.sync_gradients and cfg.max_grad_norm:
                        acc.clip_grad_norm_(params, cfg.max_grad_norm)
                    self.optimizer.step()
                    self.lr_scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.micro_step += 1
                self.data_position = position
                losses.append(loss.detach())
                step_ids.extend(str(i) for i in batch.get("id", []))
                if not acc.sync_gradients:
                    continue
                self.step += 1
                if self.ema is not None:
                    self.ema.step(params)
                last_loss = float(acc.gather(torch.stack(losses).mean()[None]).mean())
                losses.clear()
                record = {
                    "step": self.step,
                    "loss": last_loss,
                    "lr": self.lr_scheduler.get_last_lr()[0],
                    "sigma": float(out["sigma"].float().mean()),
                    "epoch": position.get("epoch", 0),
                    "ids": self._gather_ids(step_ids),  # the pairs of this step, all ranks: an audit trail
                }
                step_ids = []
                report = getattr(self.stream, "skip_report", None)
                if report is not None and len(report) > skipped_seen:
                    record["skipped"] = [list(s) for s in report.skipped[skipped_seen:]]
                    skipped_seen = len(report)
                if log is not None:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if self.trackers:
                    acc.log({k: v for k, v in record.items() if isinstance(v, float)}, step=self.step)
                bar.update(1)
                bar.set_postfix(loss=f"{last_loss:.4f}")
                due, self.checkpoint_mark = checkpoint_due(
                    cfg, self.step, self.micro_step, self.checkpoint_mark
                )
                if due:
                    self.save_checkpoint()
            if self.step < cfg.max_steps:
                raise RuntimeError(f"the data ran out at step {self.step} of {cfg.max_steps}")
        finally:
            data.close()  # joins the prefetch thread before anything else happens
            bar.close()
            if log is not None:
                log.close()
        result = self.save_outputs(last_loss)
        if self.trackers:
            acc.end_training()
        return result

    def _gather_ids(self, ids: list[str]) -> list[list[str]]:
        """Per rank, the pair ids of one optimizer step (``gather_object`` when there are many ranks)."""
        if self.accelerator.num_processes == 1:
            return [list(ids)]
        from accelerate.utils import gather_object

        return [list(x) for x in gather_object([list(ids)])]

    def _check_unoptimized(self) -> None:
        """Parameters left out of the optimizer must really get no gradient (else they would not train)."""
        named = dict(self.accelerator.unwrap_model(self.module).named_parameters())
        reached = [n for n in self.unoptimized if named[n].grad is not None and bool(named[n].grad.any())]
        if reached:
            raise TrainingError(
                f"parameters outside the optimizer got gradients: {reached[:5]} (a batch that is not a "
                "video pair?); see NO_GRADIENT_ON_VIDEO"
            )

    def save_outputs(self, last_loss: float = float("nan")) -> TrainResult:
        """Write ``pipeline/`` (``SparkleEditPipeline.from_pretrained`` loads it, LoRA merged) and
        ``kiwi/model.safetensors`` (the trainable parameters in Kiwi-Edit's format); EMA weights when on."""
        acc = self.accelerator
        acc.wait_for_everyone()
        if self.ema is not None:
            params = [p for p in self.module.parameters() if p.requires_grad]
            self.ema.store(params)
            self.ema.copy_to(params)
        try:
            full = acc.get_state_dict(self.module)
        finally:
            if self.ema is not None:
                self.ema.restore(params)
        pipeline_dir = inside(self.out, self.out / "pipeline")
        kiwi_path = inside(self.out, self.out / "kiwi" / "model.safetensors")
        if acc.is_main_process:
            state = {k.removeprefix("components."): v.detach().cpu() for k, v in full.items()}
            state.update(self.frozen_originals)  # the base as loaded, not its compute-dtype copy
            trainable = [n.removeprefix("components.") for n in self.trainable_names]
            dtype = getattr(torch, self.config.export_dtype) if self.config.export_dtype else None
            # written beside, then renamed: a full disk leaves no truncated file under the final name
            tmp_kiwi = inside(self.out, kiwi_path.with_name(kiwi_path.name + ".tmp"))
            save_kiwi_checkpoint({n: state[n] for n in trainable}, tmp_kiwi, self.lora_scaling, dtype)
            _fsync_tree(tmp_kiwi.parent)
            os.replace(tmp_kiwi, kiwi_path)
            save_dtype = getattr(torch, self.config.save_dtype) if self.config.save_dtype else None
            tmp_dir = inside(self.out, pipeline_dir.with_name("pipeline.tmp"))
            shutil.rmtree(tmp_dir, ignore_errors=True)
            with as_os_error(tmp_dir):
                pipeline_from_state(
                    self.pipe, state, self.lora_scaling, save_dtype, trained=set(trainable), vae=self.base_vae
                ).save_pretrained(str(tmp_dir))
            _fsync_tree(tmp_dir)
            _replace_dir(tmp_dir, pipeline_dir)
        acc.wait_for_everyone()
        report = getattr(self.stream, "skip_report", SkipReport())
        if len(report):
            logger.warning("%s", report.summary())
        return TrainResult(
            self.step, str(pipeline_dir), str(kiwi_path), str(self.log_path), last_loss, list(report.skipped)
        )


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def train(pipe: Any, stream: Any, config: TrainConfig, accelerator: Any = None) -> TrainResult:
    """Fine-tune ``pipe`` on ``stream`` with ``config``; see :class:`Trainer`."""
    return Trainer(pipe, stream, config, accelerator).run()
