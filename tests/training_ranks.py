"""One rank of a 2-process CPU run, started by ``torch.distributed.run`` from ``test_training_multi``.

Runs ``sparkle-video train`` three times in this process group: uninterrupted to step 4 (``full``), to step
2 (``part``), and ``part`` resumed to step 4; each rank records a digest of its trainable weights when the
outputs are written (ranks must agree under DDP). ``TRAIN_EXTRA_ARGS`` adds options to every run.
Usage: training_ranks.py DATA MODEL ROOT
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from sparkle_video.cli import main
from sparkle_video.training import loop


def record_digests(root: Path) -> None:
    original = loop.Trainer.save_outputs

    def save_outputs(self, last_loss=float("nan")):
        h = hashlib.sha256()
        for name, p in sorted(loop.trainable_state(self.accelerator.unwrap_model(self.module)).items()):
            local = p.detach()
            if hasattr(local, "to_local"):  # an FSDP2 shard: this rank's part
                local = local.to_local()
            h.update(name.encode() + local.float().contiguous().numpy().tobytes())
        run = self.out.name
        path = root / "digests" / f"{run}-step{self.step}-rank{self.rank}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(h.hexdigest())
        return original(self, last_loss)

    loop.Trainer.save_outputs = save_outputs


def force_fsdp_on_cpu() -> None:
    """accelerate enables its FSDP plugin only on accelerator devices (``MULTI_CPU`` is not in its list);
    the torch FSDP2 it drives runs on the CPU over gloo, so for this test the accelerator is switched
    to FSDP after it is made, with the plugin accelerate builds from the ``FSDP_*`` environment."""
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    original = loop.make_accelerator

    def make_accelerator(config):
        acc = original(config)
        state = AcceleratorState()
        if state.distributed_type != DistributedType.FSDP:
            state.fsdp_plugin = FullyShardedDataParallelPlugin()
            state.distributed_type = DistributedType.FSDP
            # as accelerate does for its own FSDP: every later ``AcceleratorState()`` copies this back
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP
        return acc

    loop.make_accelerator = make_accelerator
    import sparkle_video.commands.train  # noqa: F401 - it imports make_accelerator from loop at call time


def args(data: str, model: str, out: Path, steps: int, *extra: str) -> list[str]:
    return [
        "train", "--data", data, "--model", model, "--out", str(out), "--max-steps", str(steps),
        "--grad-accum", "2", "--checkpointing-steps", "4", "--lora-rank", "4", "--lr", "5e-3",
        "--mixed-precision", "no", "--report-to", "none", "--export-dtype", "none", "--save-dtype", "none",
        "--prefetch", "1", "--shuffle-buffer", "4", "--no-gradient-checkpointing",
        *os.environ.get("TRAIN_EXTRA_ARGS", "").split(), *extra,
    ]  # fmt: skip


if __name__ == "__main__":
    data, model, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    record_digests(root)
    if os.environ.get("ACCELERATE_USE_FSDP") == "true":
        force_fsdp_on_cpu()
    codes = [
        main(args(data, model, root / "full", 4)),
        main(args(data, model, root / "part", 2)),
        main(args(data, model, root / "part", 4, "--resume")),
    ]
    (root / "digests").mkdir(exist_ok=True)
    sys.exit(0 if codes == [0, 0, 0] else 1 + json.dumps(codes).count("1"))
