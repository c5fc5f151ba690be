"""Fine-tuned weights out of training: Kiwi-Edit's checkpoint format and a ``save_pretrained`` folder.

Kiwi-Edit's trainer saves the trainable parameters with the ``pipe.`` prefix removed: the DiT under
DiffSynth's names (``dit.blocks.0.self_attn.q.weight``), ``mllm.video_queries.q``, ``mllm.connetor.*``
(sic), ``vae_condition.*`` / ``ref_vae_condition.*`` and the Qwen LoRA factors
(``mllm.model.model.language_model.layers.N.self_attn.q_proj.lora_A.default.weight``). The names here are
the inverse of ``sparkle_video.pipelines.convert``'s mapping, so ``convert-checkpoint`` reads our
fine-tunes and upstream tools can too. LoRA factors are exported with the LoRA scaling (alpha / rank)
folded into ``lora_B``, so they merge with ``convert``'s default ``lora_alpha=1``, and in float32 whatever
the export dtype: the pipeline folder merges the float32 factors, and bf16 factors would make
``convert-checkpoint`` land one bf16 step away from it (upstream's loaders cast them to the model's dtype).
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
from collections.abc import Iterator
from typing import Any

import torch

from ..pipelines.convert import (  # one mapping table, read in both directions
    _BLOCK_MAP,
    _TOP_MAP,
    map_dit_name,
)

_DIT_TOP = {v: k for k, v in _TOP_MAP.items()}
_DIT_BLOCK = {v: k for k, v in _BLOCK_MAP.items()}
_LORA = re.compile(r"^(?P<target>.+)\.lora_(?P<which>[AB])\.default\.weight$")
_QWEN_LM = "mllm_encoder.mllm.model.language_model."
_SIMPLE = {
    "mllm_encoder.image_queries": "mllm.image_queries.q",
    "mllm_encoder.video_queries": "mllm.video_queries.q",
    "mllm_encoder.ref_queries": "mllm.ref_queries.q",
}


def diffsynth_dit_name(name: str) -> str | None:
    """diffusers ``WanTransformer3DModel`` parameter name -> DiffSynth's (``None`` if it has none)."""
    return map_dit_name(name, _DIT_TOP, _DIT_BLOCK)


def kiwi_key(name: str) -> str:
    """A training-module parameter name (``transformer.*``, ``mllm_encoder.*``, ``source_embedder.*``,
    ``ref_embedder.*``) -> its key in Kiwi-Edit's checkpoint; ``KeyError`` for names it cannot hold."""
    if name in _SIMPLE:
        return _SIMPLE[name]
    if name.startswith("transformer."):
        mapped = diffsynth_dit_name(name[len("transformer.") :])
        if mapped is not None:
            return "dit." + mapped
    for ours, theirs in (
        ("mllm_encoder.connector.", "mllm.connetor."),
        ("mllm_encoder.ref_connector.", "mllm.ref_connector."),
        ("source_embedder.", "vae_condition."),
        ("ref_embedder.", "ref_vae_condition."),
    ):
        if name.startswith(ours):
            return theirs + name[len(ours) :]
    if name.startswith(_QWEN_LM) and _LORA.match(name):
        return "mllm.model.model.language_model." + name[len(_QWEN_LM) :]
    raise KeyError(f"no Kiwi-Edit checkpoint key for {name!r}")


def kiwi_state_dict(
    trainable: dict[str, torch.Tensor], lora_scaling: float = 1.0, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """Trainable parameters (training-module names) -> a Kiwi-Edit checkpoint dict (contiguous CPU tensors).

    Every name must map (``KeyError`` otherwise): nothing trained is dropped silently.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in trainable.items():
        key = kiwi_key(name)
        t = value.detach().float() * lora_scaling if ".lora_B." in name else value.detach()
        if ".lora_" in name:
            t = t.float()
        elif dtype is not None:
            t = t.to(dtype)
        out[key] = t.to("cpu").contiguous().clone()
    return out


def save_kiwi_checkpoint(
    trainable: dict[str, torch.Tensor],
    path: str | os.PathLike,
    lora_scaling: float = 1.0,
    dtype: torch.dtype | None = None,
) -> str:
    """Write ``kiwi_state_dict(...)`` as a ``.safetensors`` file; return its path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_tensors(
        kiwi_state_dict(trainable, lora_scaling, dtype),
        path,
        metadata={"format": "pt", "source": "sparkle-video"},
    )
    return path


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, **kwargs: Any) -> None:
    """``safetensors.torch.save_file`` whose OS failures (a full disk) come out as ``OSError`` naming ``path``.

    safetensors reports them as its own error with the errno in the text; the train command turns an
    ``OSError`` into one ``error:`` line.
    """
    from safetensors.torch import save_file

    with as_os_error(path):
        save_file(tensors, os.fspath(path), **kwargs)
    check_safetensors_size(path)


def check_safetensors_size(path: str | os.PathLike) -> None:
    """``OSError(EIO)`` unless the file is as long as its own header says (8 + header + data).

    A write that the library reports as done can still be short (safetensors 0.8 returns without error
    when writing to ``/dev/full``); this reads only the header.
    """
    import errno
    import json
    import stat
    import struct

    path = os.fspath(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        return
    with open(path, "rb") as f:
        head = f.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        header = f.read(n) if 0 <= n <= min(st.st_size, 100 << 20) else b""
    try:
        entries = json.loads(header) if header else None
    except ValueError:
        entries = None
    if not isinstance(entries, dict):
        raise OSError(errno.EIO, "short or unreadable safetensors header after writing", path)
    end = max((v["data_offsets"][1] for k, v in entries.items() if k != "__metadata__"), default=0)
    if st.st_size != 8 + n + end:
        raise OSError(errno.EIO, f"short write ({st.st_size} of {8 + n + end} bytes)", path)


@contextlib.contextmanager
def as_os_error(path: str | os.PathLike) -> Iterator[None]:
    """Re-raise a library's write failure that carries an errno in its text as ``OSError(errno, path)``."""
    try:
        yield
    except OSError:
        raise
    except Exception as e:
        m = re.search(r"Os \{ code: (\d+)", str(e)) or re.search(r"os error (\d+)", str(e))
        if m is None:
            raise
        code = int(m.group(1))
        raise OSError(code, os.strerror(code), os.fspath(path)) from e


def merge_lora_state(state: dict[str, torch.Tensor], scaling: float) -> dict[str, torch.Tensor]:
    """A state dict with peft LoRA layers -> the plain one: ``W + (scaling * B) @ A`` under the base names.

    The scaling is folded into ``B`` first, in float32, exactly as the Kiwi export stores it and as
    ``convert-checkpoint`` then merges it, so both paths give the same bits."""
    out: dict[str, torch.Tensor] = {}
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in state.items():
        m = _LORA.match(name)
        if m:
            factors.setdefault(m["target"], {})[m["which"]] = value
        else:
            out[name.replace(".base_layer.", ".")] = value
    for target, ab in factors.items():
        key = f"{target}.weight"
        if key not in out or set(ab) != {"A", "B"}:
            raise KeyError(f"incomplete LoRA layer {target}")
        base = out[key]
        up = ab["B"].float() * scaling
        out[key] = (base.float() + up.flatten(1) @ ab["A"].float().flatten(1)).to(base.dtype)
    return out


def pipeline_from_state(
    pipe: Any,
    state: dict[str, torch.Tensor],
    lora_scaling: float,
    dtype: torch.dtype | None = None,
    trained: set[str] | None = None,
    vae: Any = None,
) -> Any:
    """A plain ``SparkleEditPipeline`` (LoRA merged) holding ``state``, the training module's full state dict.

    Components are built on the meta device and take the tensors as they are (no second random
    initialisation of 8B parameters); the scheduler and tokenizer are the training pipeline's, the VAE is
    ``vae`` (default: the pipeline's). ``dtype`` casts the weights that training changed: the names in
    ``trained`` and the LoRA-merged projections; the frozen rest keeps its own dtype and bits (the base
    as loaded). ``trained=None`` casts every component (and the VAE) as before.
    """
    from ..pipelines import SparkleEditPipeline

    merged = merge_lora_state(state, lora_scaling)
    if dtype is not None and trained is not None:
        changed = set(trained) | {f"{m['target']}.weight" for k in state if (m := _LORA.match(k))}
        merged = {
            k: (v.to(dtype) if k in changed and v.is_floating_point() else v) for k, v in merged.items()
        }
    parts: dict[str, Any] = {}
    for name in ("transformer", "mllm_encoder", "source_embedder", "ref_embedder"):
        module = getattr(pipe, name)
        if module is None:
            parts[name] = None
            continue
        prefix = name + "."
        sub = {k[len(prefix) :]: v for k, v in merged.items() if k.startswith(prefix)}
        with torch.device("meta"):
            fresh = type(module).from_config(module.config)
        fresh.load_state_dict(sub, strict=True, assign=True)
        # non-persistent buffers (RoPE tables) are not in a state dict: take them from the live module
        for key, buf in module.named_buffers():
            if key not in sub:
                _set_buffer(fresh, key, buf.detach().clone())
        parts[name] = fresh.eval() if dtype is None or trained is not None else fresh.eval().to(dtype)
    vae = pipe.vae if vae is None else vae
    if dtype is not None and trained is None and vae.dtype != dtype:
        vae = copy.deepcopy(vae).to(dtype)
    return SparkleEditPipeline(vae=vae, scheduler=pipe.scheduler, tokenizer=pipe.tokenizer, **parts)


def _set_buffer(module: torch.nn.Module, key: str, value: torch.Tensor) -> None:
    *path, leaf = key.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    persistent = leaf not in getattr(owner, "_non_persistent_buffers_set", set())
    owner.register_buffer(leaf, value, persistent=persistent)


def lora_scaling_of(module: torch.nn.Module) -> float:
    """The peft LoRA scaling (alpha / rank) used in ``module`` (1.0 when there is no LoRA)."""
    from peft.tuners.lora import LoraLayer

    scales = {
        float(m.scaling["default"])
        for m in module.modules()
        if isinstance(m, LoraLayer) and "default" in m.scaling
    }
    if len(scales) > 1:
        raise ValueError(f"LoRA layers with different scalings {sorted(scales)}")
    return scales.pop() if scales else 1.0
