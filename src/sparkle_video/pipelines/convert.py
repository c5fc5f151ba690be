"""Convert a Kiwi-Edit / Kiwi-Sparkle training checkpoint into a ``SparkleEditPipeline`` folder.

A training checkpoint holds the trained parts under DiffSynth-style names (``blocks.{i}.self_attn.q``,
``mllm.connetor.0``, ``vae_condition.patch_embedding``, optionally prefixed ``pipe.`` / ``dit.``): in the
Wan2.2-5B recipe behind Kiwi-Sparkle, the full DiT, LoRA factors on the Qwen language model's attention
projections, the learnable queries, the connectors and the condition embedders; other recipes may hold
DiT LoRA factors instead. Full tensors replace the base ones, LoRA factors are merged.
Every key is either mapped onto the stock diffusers / transformers modules or reported; unknown keys
and missing required parts fail loudly with their names.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

logger = logging.getLogger("sparkle_video")

PREFIXES = ("pipe.", "dit.", "diffusion_model.")
LORA_RE = re.compile(r"^(?P<target>.+)\.lora_(?P<which>[AB])(?:\.default)?\.weight$")

#: DiffSynth Wan DiT names -> diffusers ``WanTransformer3DModel`` names (per block and top level).
_BLOCK_MAP = {
    "self_attn.q": "attn1.to_q",
    "self_attn.k": "attn1.to_k",
    "self_attn.v": "attn1.to_v",
    "self_attn.o": "attn1.to_out.0",
    "self_attn.norm_q": "attn1.norm_q",
    "self_attn.norm_k": "attn1.norm_k",
    "cross_attn.q": "attn2.to_q",
    "cross_attn.k": "attn2.to_k",
    "cross_attn.v": "attn2.to_v",
    "cross_attn.o": "attn2.to_out.0",
    "cross_attn.norm_q": "attn2.norm_q",
    "cross_attn.norm_k": "attn2.norm_k",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
    "norm3": "norm2",
    "modulation": "scale_shift_table",
}
_TOP_MAP = {
    "text_embedding.0": "condition_embedder.text_embedder.linear_1",
    "text_embedding.2": "condition_embedder.text_embedder.linear_2",
    "time_embedding.0": "condition_embedder.time_embedder.linear_1",
    "time_embedding.2": "condition_embedder.time_embedder.linear_2",
    "time_projection.1": "condition_embedder.time_proj",
    "patch_embedding": "patch_embedding",
    "head.modulation": "scale_shift_table",
    "head.head": "proj_out",
}
_ENCODER_MAP = {
    "mllm.image_queries.q": "image_queries",
    "mllm.video_queries.q": "video_queries",
    "mllm.ref_queries.q": "ref_queries",
}
REQUIRED = (
    "video_queries",
    "connector.0.weight",
    "connector.2.weight",
    "source_embedder.patch_embedding.weight",
)


class CheckpointError(ValueError):
    """The checkpoint does not fit the base models (names the offending keys)."""


@dataclass
class ConversionReport:
    dit_lora_merged: list[str] = field(default_factory=list)
    dit_full_weights: list[str] = field(default_factory=list)
    mllm_lora_merged: list[str] = field(default_factory=list)
    encoder_weights: list[str] = field(default_factory=list)
    embedder_weights: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(v) for v in vars(self).values())

    def summary(self) -> str:
        return ", ".join(f"{k}: {len(v)}" for k, v in vars(self).items())


def first_line(exc: BaseException) -> str:
    """An exception as one short line (torch's weights-only refusals run to a dozen lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # torch's weights-only refusal says why on a later "WeightsUnpickler error: ..." line; its first
    # lines suggest loading unsafely, which is not advice to repeat
    detail = next((line.split("error:", 1)[1] for line in lines if "error:" in line), None)
    text = (detail.strip().split(". ")[0] if detail else lines[0]) if lines else "no message"
    return f"{type(exc).__name__}: {text}"[:300]


def load_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or a ``.pth``/``.pt``/``.bin`` loaded with ``weights_only=True``.

    Any failure to read it (missing, truncated, not that format, a pickle asking for more than tensors)
    is a one-line :class:`CheckpointError` naming the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # SafetensorError, OSError: a truncated or foreign file
            raise CheckpointError(f"{path} is not a readable safetensors file ({first_line(e)})") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError (refused objects), RuntimeError/EOFError (damaged zip)
        raise CheckpointError(
            f"{path} is not a readable weights-only torch checkpoint ({first_line(e)})"
        ) from e
    for key in ("state_dict", "module", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat name -> tensor state dict")
    return state


def normalize_key(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def map_dit_name(name: str, top_map: dict[str, str], block_map: dict[str, str]) -> str | None:
    """Rename a DiT module/parameter through a top-level and a per-block table (either direction).

    ``None`` when the name is in neither table. Modulation tables are bare parameters (no suffix).
    """
    for suffix in (".weight", ".bias", ""):
        if not name.endswith(suffix):
            continue
        base = name[: len(name) - len(suffix)]
        if base in top_map:
            return top_map[base] + suffix
        m = re.match(r"^blocks\.(\d+)\.(.+)$", base)
        if m and m[2] in block_map:
            return f"blocks.{m[1]}.{block_map[m[2]]}{suffix}"
    return None


def dit_name(name: str) -> str | None:
    """DiffSynth DiT module/parameter name -> diffusers name (``None`` when it is not a DiT name)."""
    return map_dit_name(name, _TOP_MAP, _BLOCK_MAP)


def encoder_name(key: str) -> str | None:
    if key in _ENCODER_MAP:
        return _ENCODER_MAP[key]
    m = re.match(r"^mllm\.(connetor|connector|ref_connector)\.(\d)\.(weight|bias)$", key)
    if m:
        head = "ref_connector" if m[1] == "ref_connector" else "connector"
        return f"{head}.{m[2]}.{m[3]}"
    return None


def qwen_candidates(target: str) -> list[str]:
    """Where an MLLM LoRA target (DiffSynth's Qwen naming) lives in transformers' Qwen2.5-VL."""
    t = target[len("mllm.") :] if target.startswith("mllm.") else target
    rest = t[len("model.") :] if t.startswith("model.") else t
    inner = rest[len("model.") :] if rest.startswith("model.") else rest
    return [f"mllm.model.language_model.{inner}", f"mllm.model.{inner}", f"mllm.{rest}", f"mllm.{t}"]


def _lora_pairs(ckpt: dict[str, torch.Tensor]) -> tuple[dict[str, dict[str, str]], list[str]]:
    pairs: dict[str, dict[str, str]] = {}
    for key in ckpt:
        m = LORA_RE.match(normalize_key(key))
        if m:
            pairs.setdefault(m["target"], {})[m["which"]] = key
    incomplete = [f"{t} (only lora_{next(iter(p))})" for t, p in pairs.items() if len(p) != 2]
    return pairs, incomplete


def _delta(ckpt: dict[str, torch.Tensor], pair: dict[str, str], alpha: float) -> torch.Tensor:
    up, down = ckpt[pair["B"]].float(), ckpt[pair["A"]].float()
    return alpha * (up.flatten(1) @ down.flatten(1))


def apply_checkpoint(
    ckpt: dict[str, torch.Tensor],
    transformer: torch.nn.Module,
    mllm_encoder: torch.nn.Module,
    source_embedder: torch.nn.Module,
    ref_embedder: torch.nn.Module | None,
    lora_alpha: float = 1.0,
) -> ConversionReport:
    """Merge/copy every checkpoint tensor into the modules; raise on anything unmapped or missing."""
    report = ConversionReport()
    dit_sd = transformer.state_dict()
    enc_sd = mllm_encoder.state_dict()
    targets = {"source_embedder": source_embedder.state_dict()}
    if ref_embedder is not None:
        targets["ref_embedder"] = ref_embedder.state_dict()
    pairs, incomplete = _lora_pairs(ckpt)
    if incomplete:
        raise CheckpointError(f"incomplete LoRA pairs: {incomplete[:10]}")
    lora_keys = {k for p in pairs.values() for k in p.values()}
    unmapped: list[str] = []
    mismatched: list[str] = []

    def put(sd: dict, name: str, value: torch.Tensor, source_key: str) -> bool:
        if name not in sd:
            unmapped.append(source_key)
            return False
        if tuple(sd[name].shape) != tuple(value.shape):
            mismatched.append(f"{source_key}: {tuple(value.shape)} vs {name} {tuple(sd[name].shape)}")
            return False
        sd[name] = value.to(sd[name].dtype)
        return True

    def merge(sd: dict, name: str, pair: dict[str, str]) -> bool:
        delta = _delta(ckpt, pair, lora_alpha)
        if delta.numel() != sd[name].numel():
            mismatched.append(
                f"{pair['B']}: LoRA product {tuple(delta.shape)} vs {name} {tuple(sd[name].shape)}"
            )
            return False
        return put(sd, name, sd[name].float() + delta.reshape(sd[name].shape), pair["B"])

    for target, pair in pairs.items():
        if target.startswith("mllm."):
            where = next((c for c in qwen_candidates(target) if f"{c}.weight" in enc_sd), None)
            if where is None:
                unmapped.extend(pair.values())
                continue
            if merge(enc_sd, f"{where}.weight", pair):
                report.mllm_lora_merged.append(target)
            continue
        name = dit_name(f"{target}.weight")
        if name is None or name not in dit_sd:
            unmapped.extend(pair.values())
            continue
        if merge(dit_sd, name, pair):
            report.dit_lora_merged.append(target)
    for key, value in ckpt.items():
        if key in lora_keys:
            continue
        k = normalize_key(key)
        if (enc := encoder_name(k)) is not None:
            if put(enc_sd, enc, value, key):
                report.encoder_weights.append(enc)
        elif k.startswith(("vae_condition.", "ref_vae_condition.")):
            which = "source_embedder" if k.startswith("vae_condition.") else "ref_embedder"
            if which not in targets:
                raise CheckpointError(
                    f"{key}: the checkpoint has a reference embedder but the pipeline has none"
                )
            if put(targets[which], k.split(".", 1)[1], value, key):
                report.embedder_weights.append(f"{which}.{k.split('.', 1)[1]}")
        elif (d := dit_name(k)) is not None:
            if put(dit_sd, d, value, key):
                report.dit_full_weights.append(d)
        else:
            unmapped.append(key)
    if unmapped or mismatched:
        raise CheckpointError(
            "incompatible checkpoint: "
            + (f"{len(unmapped)} unmapped keys {sorted(unmapped)[:20]}" if unmapped else "")
            + (f"; {len(mismatched)} shape mismatches {mismatched[:10]}" if mismatched else "")
        )
    present = set(report.encoder_weights) | set(report.embedder_weights)
    missing = [r for r in REQUIRED if r not in present]
    if missing:
        raise CheckpointError(f"checkpoint lacks required parts: {missing}")
    transformer.load_state_dict(dit_sd)
    mllm_encoder.load_state_dict(enc_sd)
    source_embedder.load_state_dict(targets["source_embedder"])
    if ref_embedder is not None:
        ref_embedder.load_state_dict(targets["ref_embedder"])
    logger.info("converted %d tensors (%s)", report.total, report.summary())
    return report


def _shapes(ckpt: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {encoder_name(normalize_key(k)) or normalize_key(k): tuple(v.shape) for k, v in ckpt.items()}


def convert_checkpoint(
    ckpt: str | os.PathLike | dict[str, torch.Tensor],
    base_transformer: Any,
    base_vae: Any,
    mllm: Any,
    tokenizer: Any = None,
    out_dir: str | os.PathLike | None = None,
    lora_alpha: float = 1.0,
    dtype: torch.dtype | None = None,
    ref_pad_first: bool = False,
    max_ref_tokens: int = 768,
    torch_dtype: torch.dtype | None = None,
) -> tuple[Any, ConversionReport]:
    """Build a ``SparkleEditPipeline`` from a training checkpoint and base models; optionally save it.

    ``base_transformer``/``base_vae``/``mllm`` are paths or Hub ids (a Wan2.2-TI2V-5B diffusers
    ``transformer``/``vae`` folder, Qwen2.5-VL-3B-Instruct) or already-loaded modules; ``tokenizer``
    defaults to the MLLM's. Two training settings are not stored in a checkpoint and must be given
    for reference-image models: whether the reference tokens went first (``ref_pad_first``) and the
    reference image's token budget in the encoder (``max_ref_tokens``, 28x28-pixel tokens).
    Already-loaded modules are used, and modified, in place (no second copy of 8B parameters).
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    from ..models import SparkleConditionEmbedder, SparkleMLLMEncoder, make_scheduler
    from .pipeline_sparkle_edit import SparkleEditPipeline

    state = ckpt if isinstance(ckpt, dict) else load_checkpoint(ckpt)
    transformer = (
        base_transformer
        if isinstance(base_transformer, torch.nn.Module)
        else (load_component(WanTransformer3DModel, base_transformer, "transformer"))
    )
    vae = (
        base_vae
        if isinstance(base_vae, torch.nn.Module)
        else (load_component(AutoencoderKLWan, base_vae, "vae"))
    )
    qwen = (
        mllm
        if isinstance(mllm, torch.nn.Module)
        else Qwen2_5_VLForConditionalGeneration.from_pretrained(mllm)
    )
    if tokenizer is None:
        if isinstance(mllm, torch.nn.Module):
            raise ValueError("pass the tokenizer when mllm is an already-loaded model")
        tokenizer = AutoTokenizer.from_pretrained(mllm)
    shapes = _shapes(state)
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    if "video_queries" not in shapes:
        raise CheckpointError("checkpoint lacks required parts: ['video_queries']")
    encoder = SparkleMLLMEncoder.from_qwen(
        qwen,
        dit_dim=dim,
        num_image_queries=shapes.get("image_queries", (256,))[0],
        num_video_queries=shapes["video_queries"][0],
        num_ref_queries=shapes.get("ref_queries", (512,))[0],
        max_ref_pixels=28 * 28 * max_ref_tokens,
    )
    z = transformer.config.in_channels
    patch = tuple(transformer.config.patch_size)
    source_embedder = SparkleConditionEmbedder(in_channels=z, dim=dim, patch_size=patch)
    has_ref = any(normalize_key(k).startswith("ref_vae_condition.") for k in state)
    ref_embedder = (
        SparkleConditionEmbedder(in_channels=z, dim=dim, patch_size=patch, ref_pad_first=ref_pad_first)
        if has_ref
        else None
    )
    report = apply_checkpoint(state, transformer, encoder, source_embedder, ref_embedder, lora_alpha)
    pipe = SparkleEditPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=make_scheduler(),
        mllm_encoder=encoder,
        tokenizer=tokenizer,
        source_embedder=source_embedder,
        ref_embedder=ref_embedder,
    )
    dtype = dtype if dtype is not None else torch_dtype  # ``torch_dtype``: the older diffusers spelling
    if dtype is not None:
        pipe.to(dtype)
    if out_dir is not None:
        pipe.save_pretrained(out_dir)
    return pipe, report


def load_component(cls: Any, path: str | os.PathLike, name: str) -> Any:
    """Load ``cls`` from a component folder/repo, or from the ``name`` subfolder of a whole pipeline's."""
    p = os.fspath(path)
    if os.path.isdir(p):
        return cls.from_pretrained(p, subfolder=name if os.path.isdir(os.path.join(p, name)) else None)
    try:  # a Hub id: a diffusers pipeline repo has the component in a subfolder
        return cls.from_pretrained(p, subfolder=name)
    except OSError:
        return cls.from_pretrained(p)


def unmapped_keys(ckpt: Iterable[str]) -> list[str]:
    """Keys no rule recognises (a quick check before loading any base model)."""
    out = []
    for key in ckpt:
        k = normalize_key(key)
        m = LORA_RE.match(k)
        target = m["target"] if m else k
        if m and target.startswith("mllm."):
            continue
        if encoder_name(k) or k.startswith(("vae_condition.", "ref_vae_condition.")):
            continue
        if dit_name(f"{target}.weight" if m else k) is None:
            out.append(key)
    return out
