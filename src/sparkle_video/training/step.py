"""The training step: Kiwi-Edit's flow-matching loss computed through the pipeline's own methods.

``SparkleTrainingModule`` owns no model code: the VAE latents, the instruction context and the DiT's
velocity come from ``SparkleEditPipeline.encode_video_latents`` / ``encode_prompt`` / ``predict_flow``,
the very functions the sampler uses, so training and inference cannot drift apart. The module only
holds the trainable components (for ``accelerate.prepare``: DDP, DeepSpeed, FSDP) and draws the
timestep and noise from a generator it is given, which makes every step reproducible from its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .loss import TrainingTimesteps, flow_matching_loss, noisy_latents, training_timesteps

#: The recipe's LoRA on the Qwen language model (rank 64, alpha = rank).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
LORA_RANK = 64


#: ``forward`` returns a dict (DDP looks for tensors in dicts): ``loss`` and, per row, ``timestep``
#: (what the DiT saw), ``sigma`` and ``weight``.
StepOutput = dict[str, torch.Tensor]


def language_model(encoder: nn.Module) -> nn.Module:
    """The Qwen2.5-VL language model inside a ``SparkleMLLMEncoder`` (where the recipe's LoRA goes)."""
    return encoder.mllm.model.language_model


def add_lora(
    encoder: nn.Module,
    rank: int = LORA_RANK,
    alpha: float | None = None,
    targets: Sequence[str] = LORA_TARGETS,
) -> None:
    """Inject a peft LoRA (``lora_A/lora_B.default``) into the encoder's language model, in place."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank if alpha is None else alpha, target_modules=list(targets))
    inject_adapter_in_model(config, language_model(encoder))


#: Prefixes (training-module names, ``components.`` removed) of trainable parameters that video pairs never
#: reach: the image queries (single-frame sources only), the DiT's text projection (the encoder's context
#: bypasses it) and, when trained, the reference-image parts. They stay in the trainable set (and in the
#: checkpoint's key set, as upstream) but out of the optimizer: AdamW skips a parameter without a gradient,
#: so this changes nothing in the math, and sharded engines (FSDP, DeepSpeed) then have no parameter
#: without optimizer state to fail on when a checkpoint is loaded.
NO_GRADIENT_ON_VIDEO = (
    "mllm_encoder.image_queries",
    "mllm_encoder.ref_queries",
    "mllm_encoder.ref_connector.",
    "transformer.condition_embedder.text_embedder.",
    "ref_embedder.",
)

#: Upstream Kiwi-Edit's reference-query count (``train.py``) when its reference parts are trained.
UPSTREAM_REF_QUERIES = 768


def reference_recipe_note(pipe: Any, train_reference: bool) -> str | None:
    """Why a ``train_reference`` run differs from upstream's reference stage (None: it does not, or the
    reference parts are not trained): upstream sizes the reference queries at 768, the released
    checkpoints and our configs at 512, and the count is fixed by the loaded weights."""
    count = int(pipe.mllm_encoder.ref_queries.shape[0])
    if not train_reference or count == UPSTREAM_REF_QUERIES:
        return None
    return (
        f"training the reference parts with {count} reference queries; upstream's train.py uses "
        f"{UPSTREAM_REF_QUERIES} (build the encoder with num_ref_queries={UPSTREAM_REF_QUERIES} for that)"
    )


def configure_trainable(
    pipe: Any,
    lora_rank: int | None = LORA_RANK,
    lora_alpha: float | None = None,
    lora_targets: Sequence[str] = LORA_TARGETS,
    train_reference: bool = False,
) -> list[str]:
    """Set ``requires_grad`` as in the recipe; return the names of the trainable parameters.

    The default is upstream's stage-2 (video) set, as its script names it: ``mllm.image_queries,
    mllm.video_queries, mllm.connetor, dit, vae_condition`` and a LoRA on the Qwen language model's
    attention projections. Frozen: the VAE, the Qwen vision tower, every Qwen base weight and the
    reference-image parts (queries, connector, embedder). ``train_reference=True`` also trains those
    (upstream's reference stage). ``lora_rank=None`` trains no LoRA (Qwen fully frozen).
    """
    encoder = pipe.mllm_encoder
    pipe.vae.requires_grad_(False)
    encoder.requires_grad_(False)
    if lora_rank:
        add_lora(encoder, lora_rank, lora_alpha, lora_targets)
        for name, p in language_model(encoder).named_parameters():
            p.requires_grad_(".lora_" in name)
    for name in ("image_queries", "video_queries"):
        getattr(encoder, name).requires_grad_(True)
    encoder.connector.requires_grad_(True)
    pipe.transformer.requires_grad_(True)
    pipe.source_embedder.requires_grad_(True)
    if pipe.ref_embedder is not None:
        pipe.ref_embedder.requires_grad_(train_reference)
    encoder.ref_queries.requires_grad_(train_reference)
    encoder.ref_connector.requires_grad_(train_reference)
    return [n for n, p in trainable_modules(pipe).named_parameters() if p.requires_grad]


def optimized(name: str) -> bool:
    """Whether the trainable parameter ``name`` goes into the optimizer (see ``NO_GRADIENT_ON_VIDEO``)."""
    return not name.removeprefix("components.").startswith(NO_GRADIENT_ON_VIDEO)


def trainable_modules(pipe: Any) -> nn.ModuleDict:
    """The components that carry trainable parameters, under stable names (the checkpoint's key prefixes)."""
    modules = {
        "transformer": pipe.transformer,
        "mllm_encoder": pipe.mllm_encoder,
        "source_embedder": pipe.source_embedder,
    }
    if pipe.ref_embedder is not None:
        modules["ref_embedder"] = pipe.ref_embedder
    return nn.ModuleDict(modules)


class SparkleTrainingModule(nn.Module):
    """What ``accelerate`` wraps: the trainable components and a ``forward`` that returns the loss.

    The VAE is used but deliberately not a submodule (frozen, never sharded or checkpointed, as upstream).

    Args:
        pipe: a ``SparkleEditPipeline`` already set up with ``configure_trainable``.
        timesteps: the training grid (default: Kiwi-Edit's, see ``loss.training_timesteps``).
        timestep_dtype: the dtype the drawn timestep is rounded to before use (upstream: the training
            dtype, bf16; float32 keeps the drawn grid point).
    """

    def __init__(
        self,
        pipe: Any,
        timesteps: TrainingTimesteps | None = None,
        timestep_dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.components = trainable_modules(pipe)
        object.__setattr__(self, "pipe", pipe)  # not a submodule: its VAE stays outside
        self.grid = timesteps or training_timesteps()
        self.timestep_dtype = timestep_dtype

    def draw(
        self, batch_size: int, latent_shape: Sequence[int], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Timestep indices (uniform over the grid) and unit Gaussian noise, on the CPU generator."""
        index = torch.randint(0, len(self.grid), (batch_size,), generator=generator)
        noise = torch.randn(tuple(latent_shape), generator=generator, dtype=torch.float32)
        return index, noise

    def forward(
        self,
        batch: dict[str, Any],
        generator: torch.Generator | None = None,
        index: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> StepOutput:
        """Loss of one batch (``source``/``target`` ``(B, T, H, W, 3) uint8``, ``prompt`` list).

        ``index``/``noise`` may be given (tests); otherwise they are drawn from ``generator``.
        """
        pipe = self.pipe
        # uint8 frames as numpy (DDP may have moved the batch to the device; the pipeline uploads itself)
        sources, targets = (
            np.asarray(batch[k].cpu()) if torch.is_tensor(batch[k]) else batch[k]
            for k in ("source", "target")
        )
        with torch.no_grad():  # the VAE is frozen
            x0 = pipe.encode_video_latents(targets).float()
            source_latents = pipe.encode_video_latents(sources)
        context = torch.cat(
            [pipe.encode_prompt(prompt, sources[i]) for i, prompt in enumerate(batch["prompt"])]
        )
        if index is None or noise is None:
            if generator is None:
                raise ValueError("give a generator, or both index and noise")
            drawn_index, drawn_noise = self.draw(x0.shape[0], x0.shape, generator)
            index = drawn_index if index is None else index
            noise = drawn_noise if noise is None else noise
        timestep, sigma, weight = self.grid.lookup(index, self.timestep_dtype)
        device = x0.device
        noise = noise.to(device)
        sigma, weight = sigma.to(device), weight.to(device)
        latents = noisy_latents(x0, noise, sigma)
        prediction = pipe.predict_flow(latents, sigma, context, source_latents, timestep=timestep.to(device))
        loss = flow_matching_loss(prediction, x0, noise, weight)
        return {"loss": loss, "timestep": timestep, "sigma": sigma, "weight": weight}
