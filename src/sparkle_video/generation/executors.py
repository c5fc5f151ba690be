"""Executors: the same stage steps run in this process (local) or as a Ray Data pipeline (ray).

Both read the same plan and write the same work files and ledger, so their outputs are identical and a
run started with one can be resumed with the other. Like datatrove's executors, the pipeline is defined
once (:data:`~.ledger.STAGES` and :func:`~.steps.run_step`); an executor only decides where steps run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .backends.protocols import Resources
from .backends.registry import BackendConfig, backend_config_from_mapping
from .ledger import STAGES
from .steps import PlanItem, StageContext, run_step, stage_roles

logger = logging.getLogger(__name__)


class LocalExecutor:
    """Stage after stage in this process, each stage's backends built once, a progress bar per stage."""

    name = "local"

    def run(
        self, plan: Sequence[PlanItem], out: str | Path, config: BackendConfig, progress: bool = True
    ) -> None:
        ctx = StageContext(out, config)
        ledger = ctx.workspace.ledger
        for stage in STAGES:
            todo = [item for item in plan if ledger.needs(stage, item.id)]
            if not todo:
                continue
            ctx.load(stage_roles(stage, config))
            for item in tqdm(todo, desc=stage, disable=not progress, unit="clip"):
                run_step(stage, ctx, item)


def stage_resources(stage: str, config: BackendConfig) -> Resources:
    """What one worker of ``stage`` needs: the GPUs and GPU memory of all its roles' models together
    (they are loaded side by side in one worker), and the largest CPU need among them."""
    roles = stage_roles(stage, config)
    if not roles:
        return Resources(num_gpus=0.0, num_cpus=0.25)
    needs = [config.resources(role) for role in roles]
    return Resources(
        num_gpus=sum(r.num_gpus for r in needs),
        num_cpus=max(r.num_cpus for r in needs),
        gpu_memory_gb=sum(r.gpu_memory_gb for r in needs),
    )


class StageWorker:
    """A Ray Data callable class: keeps one stage's backends loaded and runs the stage on each row."""

    def __init__(self, stage: str, out: str, config: dict[str, Any]):
        self.stage = stage
        self.ctx = StageContext(out, backend_config_from_mapping(config, source="ray"))
        self.ctx.load(stage_roles(stage, self.ctx.config))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        statuses = []
        for i in range(len(batch["id"])):
            item = PlanItem(**{f.name: str(batch[f.name][i]) for f in fields(PlanItem)})
            ledger = self.ctx.workspace.ledger
            if ledger.needs(self.stage, item.id):
                statuses.append(run_step(self.stage, self.ctx, item).status)
            else:
                done = ledger.get(self.stage, item.id)
                statuses.append(done.status if done is not None else "skipped")
        return {**batch, "status": statuses}


def init_ray(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Connect to ``address`` (or ``RAY_ADDRESS``), or start a private local Ray bound to 127.0.0.1.

    A local start needs no network and no dashboard, and token authentication is turned off for it
    (``RAY_AUTH_MODE=disabled``, unless set) because it listens on loopback only and would otherwise
    write a token into the home folder. Joining a cluster leaves authentication to the cluster's own
    ``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN``.
    """
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        kwargs.update(num_cpus=num_cpus, _node_ip_address="127.0.0.1")
        ray.init(**kwargs)
    else:
        ray.init(address=address, **kwargs)
    return ray


class RayExecutor:
    """The five stages as one streaming Ray Data pipeline; model stages are actor pools.

    Each stage is a ``map_batches`` over plan rows (batch size 1). Stages whose roles need a model run
    as actor pools sized by ``concurrency`` (the models stay loaded); the rest run as tasks. A stage's
    ``num_gpus``/``num_cpus`` come from its backends' ``resources``, so on a cluster Ray places model
    stages on GPU nodes and streams rows between stages with its own backpressure and retries. The
    output folder must be on storage every node can reach (a shared filesystem).
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_cpus: int | None = None, concurrency: int = 1):
        self.address = address
        self.num_cpus = num_cpus
        self.concurrency = concurrency

    def run(
        self, plan: Sequence[PlanItem], out: str | Path, config: BackendConfig, progress: bool = True
    ) -> None:
        if not plan:
            return
        init_ray(self.address, self.num_cpus)
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.verbose_stats_logs = False
        out = str(Path(out).resolve())
        spec = config.to_dict()
        ds = ray.data.from_items([asdict(item) for item in plan], override_num_blocks=len(plan))
        for stage in STAGES:
            need = stage_resources(stage, config)
            kwargs: dict[str, Any] = {"batch_size": 1, "num_cpus": need.num_cpus}
            if need.num_gpus:
                kwargs["num_gpus"] = need.num_gpus
            if stage_roles(stage, config):
                kwargs["compute"] = ray.data.ActorPoolStrategy(min_size=1, max_size=self.concurrency)
                kwargs["fn_constructor_kwargs"] = {"stage": stage, "out": out, "config": spec}
                ds = ds.map_batches(StageWorker, **kwargs)
            else:
                ds = ds.map_batches(
                    _task_stage, fn_kwargs={"stage": stage, "out": out, "config": spec}, **kwargs
                )
            ds = ds.filter(expr="status == 'passed'")
        for _ in ds.iter_rows():  # drives the pipeline; results are in the ledger and work files
            pass


def _task_stage(batch: dict[str, Any], stage: str, out: str, config: dict[str, Any]) -> dict[str, Any]:
    return StageWorker(stage, out, config)(batch)


def make_executor(name: str, *, ray_address: str | None = None, **kwargs: Any) -> Any:
    if name == "local":
        if kwargs:
            raise ValueError(f"the local executor takes no options, got {sorted(kwargs)}")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(ray_address, **kwargs)
    raise ValueError(f"executor must be 'local' or 'ray', got {name!r}")
