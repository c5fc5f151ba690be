"""Checkpoint conversion: upstream key names round-trip into the pipeline, every key mapped or reported."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sparkle_video import SparkleEditPipeline
from sparkle_video.data.synthetic import make_pair
from sparkle_video.models import tiny_components
from sparkle_video.pipelines.convert import (
    CheckpointError,
    convert_checkpoint,
    dit_name,
    load_checkpoint,
    unmapped_keys,
)


def synthetic_checkpoint(parts: dict, rank: int = 2) -> dict[str, torch.Tensor]:
    """A Kiwi-Edit-style training checkpoint for the tiny model, with upstream key names."""
    g = torch.Generator().manual_seed(3)
    enc = parts["mllm_encoder"]
    ck: dict[str, torch.Tensor] = {}
    for target, shape in [
        ("blocks.0.self_attn.q", (16, 16)),
        ("blocks.1.cross_attn.o", (16, 16)),
        ("blocks.1.ffn.0", (32, 16)),
        ("blocks.0.ffn.2", (16, 32)),
    ]:
        ck[f"pipe.dit.{target}.lora_A.default.weight"] = torch.randn(rank, shape[1], generator=g)
        ck[f"pipe.dit.{target}.lora_B.default.weight"] = torch.randn(shape[0], rank, generator=g)
    ck["pipe.mllm.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"] = torch.randn(
        rank, 32, generator=g
    )
    ck["pipe.mllm.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"] = torch.randn(
        32, rank, generator=g
    )
    for name in ("image_queries", "video_queries", "ref_queries"):
        ck[f"pipe.mllm.{name}.q"] = torch.randn(*getattr(enc, name).shape, generator=g)
    for head, upstream in (("connector", "connetor"), ("ref_connector", "ref_connector")):
        for i in (0, 2):
            mod = getattr(enc, head)[i]
            ck[f"pipe.mllm.{upstream}.{i}.weight"] = torch.randn(*mod.weight.shape, generator=g)
            ck[f"pipe.mllm.{upstream}.{i}.bias"] = torch.randn(*mod.bias.shape, generator=g)
    for prefix, module in (
        ("vae_condition", parts["source_embedder"]),
        ("ref_vae_condition", parts["ref_embedder"]),
    ):
        ck[f"pipe.{prefix}.patch_embedding.weight"] = torch.randn(
            *module.patch_embedding.weight.shape, generator=g
        )
        ck[f"pipe.{prefix}.patch_embedding.bias"] = torch.randn(
            *module.patch_embedding.bias.shape, generator=g
        )
    return ck


def test_key_mapping_table() -> None:
    assert dit_name("blocks.3.self_attn.o.weight") == "blocks.3.attn1.to_out.0.weight"
    assert dit_name("blocks.0.cross_attn.norm_k.weight") == "blocks.0.attn2.norm_k.weight"
    assert dit_name("blocks.2.ffn.0.bias") == "blocks.2.ffn.net.0.proj.bias"
    assert dit_name("blocks.2.norm3.weight") == "blocks.2.norm2.weight"
    assert dit_name("blocks.2.modulation") == "blocks.2.scale_shift_table"
    assert dit_name("head.head.weight") == "proj_out.weight"
    assert dit_name("time_projection.1.bias") == "condition_embedder.time_proj.bias"
    assert dit_name("something.else") is None


def test_round_trip_into_pipeline(tmp_path) -> None:
    parts = tiny_components(seed=0)
    base_q = parts["transformer"].blocks[0].attn1.to_q.weight.detach().clone()
    base_qwen = (
        parts["mllm_encoder"].mllm.model.language_model.layers[0].self_attn.q_proj.weight.detach().clone()
    )
    ck = synthetic_checkpoint(parts)
    assert unmapped_keys(ck) == []
    path = tmp_path / "model.safetensors"
    save_file(ck, str(path))
    pipe, report = convert_checkpoint(
        path,
        parts["transformer"],
        parts["vae"],
        parts["mllm_encoder"].mllm,
        tokenizer=parts["tokenizer"],
        out_dir=tmp_path / "converted",
        lora_alpha=0.5,
    )
    assert len(report.dit_lora_merged) == 4 and len(report.mllm_lora_merged) == 1
    assert report.total == len(ck) - 5  # each LoRA pair (2 keys) is one merge
    a = ck["pipe.dit.blocks.0.self_attn.q.lora_A.default.weight"]
    b = ck["pipe.dit.blocks.0.self_attn.q.lora_B.default.weight"]
    torch.testing.assert_close(pipe.transformer.blocks[0].attn1.to_q.weight, base_q + 0.5 * b @ a)
    qa = ck["pipe.mllm.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    qb = ck["pipe.mllm.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    torch.testing.assert_close(
        pipe.mllm_encoder.mllm.model.language_model.layers[0].self_attn.q_proj.weight,
        base_qwen + 0.5 * qb @ qa,
    )
    torch.testing.assert_close(pipe.mllm_encoder.video_queries.data, ck["pipe.mllm.video_queries.q"])
    torch.testing.assert_close(pipe.mllm_encoder.connector[2].weight.data, ck["pipe.mllm.connetor.2.weight"])
    torch.testing.assert_close(
        pipe.source_embedder.patch_embedding.bias.data, ck["pipe.vae_condition.patch_embedding.bias"]
    )
    torch.testing.assert_close(
        pipe.ref_embedder.patch_embedding.weight.data, ck["pipe.ref_vae_condition.patch_embedding.weight"]
    )
    # the saved folder loads with no remote code and edits
    loaded = SparkleEditPipeline.from_pretrained(tmp_path / "converted")
    loaded.set_progress_bar_config(disable=True)
    clip = make_pair(0, num_frames=9, height=64, width=64).source
    a1 = loaded("snow", clip, num_inference_steps=1, generator=torch.Generator().manual_seed(0)).frames
    a2 = pipe("snow", clip, num_inference_steps=1, generator=torch.Generator().manual_seed(0)).frames
    np.testing.assert_allclose(a1, a2, atol=1e-6)


def test_unknown_and_missing_keys_fail_loudly() -> None:
    parts = tiny_components(seed=0)
    ck = synthetic_checkpoint(parts)
    ck["pipe.mystery.weight"] = torch.zeros(3)
    assert unmapped_keys(ck) == ["pipe.mystery.weight"]
    with pytest.raises(CheckpointError, match=r"unmapped keys \['pipe.mystery.weight'\]"):
        convert_checkpoint(
            ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"]
        )
    ck = synthetic_checkpoint(parts)
    del ck["pipe.vae_condition.patch_embedding.weight"]
    with pytest.raises(CheckpointError, match=r"source_embedder\.patch_embedding\.weight"):
        convert_checkpoint(
            ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"]
        )
    ck = synthetic_checkpoint(parts)
    ck["pipe.dit.blocks.0.self_attn.q.lora_B.default.weight"] = torch.zeros(5, 2)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        convert_checkpoint(
            ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"]
        )
    ck = synthetic_checkpoint(parts)
    del ck["pipe.dit.blocks.1.ffn.0.lora_A.default.weight"]
    with pytest.raises(CheckpointError, match="incomplete LoRA pairs"):
        convert_checkpoint(
            ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"]
        )


def test_pth_is_loaded_without_unpickling_objects(tmp_path) -> None:
    good = tmp_path / "ok.pth"
    torch.save({"state_dict": {"a": torch.ones(2)}}, good)
    assert torch.equal(load_checkpoint(good)["a"], torch.ones(2))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "bad.pth"
    torch.save({"a": Evil()}, bad)
    with pytest.raises(Exception, match=r"(?i)weights_only|unsupported|global"):
        load_checkpoint(bad)


def test_convert_checkpoint_command_from_folders(tmp_path) -> None:
    """The CLI loads base models from folders (a whole pipeline folder or the component's own)."""
    from sparkle_video.cli import main

    parts = tiny_components(seed=0)
    ck = synthetic_checkpoint(parts)
    save_file(ck, str(tmp_path / "model.safetensors"))
    parts["transformer"].save_pretrained(tmp_path / "wan" / "transformer")  # a pipeline-style folder
    parts["vae"].save_pretrained(tmp_path / "vae")  # the component's own folder
    parts["mllm_encoder"].mllm.save_pretrained(tmp_path / "qwen")
    parts["tokenizer"].save_pretrained(tmp_path / "qwen")
    code = main(
        [
            "convert-checkpoint",
            "--ckpt",
            str(tmp_path / "model.safetensors"),
            "--base-transformer",
            str(tmp_path / "wan"),
            "--base-vae",
            str(tmp_path / "vae"),
            "--mllm",
            str(tmp_path / "qwen"),
            "--out",
            str(tmp_path / "out"),
            "--dtype",
            "float32",
            "--lora-alpha",
            "2",
            "--ref-pad-first",
            "--max-ref-tokens",
            "4",
        ]
    )
    assert code == 0
    pipe = SparkleEditPipeline.from_pretrained(tmp_path / "out")
    assert pipe.ref_embedder.config.ref_pad_first is True
    assert pipe.mllm_encoder.config.max_ref_pixels == 28 * 28 * 4
    a = ck["pipe.dit.blocks.1.cross_attn.o.lora_A.default.weight"]
    b = ck["pipe.dit.blocks.1.cross_attn.o.lora_B.default.weight"]
    base = parts["transformer"].blocks[1].attn2.to_out[0].weight
    torch.testing.assert_close(pipe.transformer.blocks[1].attn2.to_out[0].weight, base + 2 * b @ a)
    torch.testing.assert_close(pipe.mllm_encoder.ref_queries.data, ck["pipe.mllm.ref_queries.q"])


#: Upstream (DiffSynth Wan DiT) parameter names of one block -> diffusers ``WanTransformer3DModel`` names,
#: written out by hand (DiffSynth's norm1/norm2 have no parameters; its norm3, the cross-attention norm,
#: is diffusers' norm2).
GOLDEN_BLOCK = {
    "blocks.1.self_attn.q.weight": "blocks.1.attn1.to_q.weight",
    "blocks.1.self_attn.q.bias": "blocks.1.attn1.to_q.bias",
    "blocks.1.self_attn.k.weight": "blocks.1.attn1.to_k.weight",
    "blocks.1.self_attn.k.bias": "blocks.1.attn1.to_k.bias",
    "blocks.1.self_attn.v.weight": "blocks.1.attn1.to_v.weight",
    "blocks.1.self_attn.v.bias": "blocks.1.attn1.to_v.bias",
    "blocks.1.self_attn.o.weight": "blocks.1.attn1.to_out.0.weight",
    "blocks.1.self_attn.o.bias": "blocks.1.attn1.to_out.0.bias",
    "blocks.1.self_attn.norm_q.weight": "blocks.1.attn1.norm_q.weight",
    "blocks.1.self_attn.norm_k.weight": "blocks.1.attn1.norm_k.weight",
    "blocks.1.cross_attn.q.weight": "blocks.1.attn2.to_q.weight",
    "blocks.1.cross_attn.q.bias": "blocks.1.attn2.to_q.bias",
    "blocks.1.cross_attn.k.weight": "blocks.1.attn2.to_k.weight",
    "blocks.1.cross_attn.k.bias": "blocks.1.attn2.to_k.bias",
    "blocks.1.cross_attn.v.weight": "blocks.1.attn2.to_v.weight",
    "blocks.1.cross_attn.v.bias": "blocks.1.attn2.to_v.bias",
    "blocks.1.cross_attn.o.weight": "blocks.1.attn2.to_out.0.weight",
    "blocks.1.cross_attn.o.bias": "blocks.1.attn2.to_out.0.bias",
    "blocks.1.cross_attn.norm_q.weight": "blocks.1.attn2.norm_q.weight",
    "blocks.1.cross_attn.norm_k.weight": "blocks.1.attn2.norm_k.weight",
    "blocks.1.norm3.weight": "blocks.1.norm2.weight",
    "blocks.1.norm3.bias": "blocks.1.norm2.bias",
    "blocks.1.ffn.0.weight": "blocks.1.ffn.net.0.proj.weight",
    "blocks.1.ffn.0.bias": "blocks.1.ffn.net.0.proj.bias",
    "blocks.1.ffn.2.weight": "blocks.1.ffn.net.2.weight",
    "blocks.1.ffn.2.bias": "blocks.1.ffn.net.2.bias",
    "blocks.1.modulation": "blocks.1.scale_shift_table",
}
GOLDEN_TOP = {
    "patch_embedding.weight": "patch_embedding.weight",
    "patch_embedding.bias": "patch_embedding.bias",
    "text_embedding.0.weight": "condition_embedder.text_embedder.linear_1.weight",
    "text_embedding.0.bias": "condition_embedder.text_embedder.linear_1.bias",
    "text_embedding.2.weight": "condition_embedder.text_embedder.linear_2.weight",
    "text_embedding.2.bias": "condition_embedder.text_embedder.linear_2.bias",
    "time_embedding.0.weight": "condition_embedder.time_embedder.linear_1.weight",
    "time_embedding.0.bias": "condition_embedder.time_embedder.linear_1.bias",
    "time_embedding.2.weight": "condition_embedder.time_embedder.linear_2.weight",
    "time_embedding.2.bias": "condition_embedder.time_embedder.linear_2.bias",
    "time_projection.1.weight": "condition_embedder.time_proj.weight",
    "time_projection.1.bias": "condition_embedder.time_proj.bias",
    "head.head.weight": "proj_out.weight",
    "head.head.bias": "proj_out.bias",
    "head.modulation": "scale_shift_table",
}


@pytest.mark.parametrize("upstream", sorted(GOLDEN_BLOCK))
def test_golden_block_names(upstream: str) -> None:
    assert dit_name(upstream) == GOLDEN_BLOCK[upstream]


def test_golden_tables_cover_the_diffusers_model() -> None:
    state = tiny_components(seed=0)["transformer"].state_dict()
    block1 = {k for k in state if k.startswith("blocks.1.")}
    assert set(GOLDEN_BLOCK.values()) == block1  # every parameter of a block, each named once
    assert set(GOLDEN_TOP.values()) == {k for k in state if not k.startswith("blocks.")}
    for upstream, expected in GOLDEN_TOP.items():
        assert dit_name(upstream) == expected, upstream


def distinct_checkpoint(parts: dict) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A full-DiT (Wan2.2-5B recipe) checkpoint under upstream names where no two values are equal.

    Returns the checkpoint and, per key, the diffusers parameter it must land in (from the golden tables).
    """
    counter = [0]

    def distinct(shape: tuple[int, ...]) -> torch.Tensor:
        n = int(np.prod(shape))
        t = torch.arange(counter[0], counter[0] + n, dtype=torch.float32).reshape(shape) / 64.0 + 1.0
        counter[0] += n
        return t

    state = parts["transformer"].state_dict()
    ck: dict[str, torch.Tensor] = {}
    lands: dict[str, str] = {}
    for block in range(parts["transformer"].config.num_layers):
        for upstream, target in GOLDEN_BLOCK.items():
            up = upstream.replace("blocks.1.", f"blocks.{block}.", 1)
            tgt = target.replace("blocks.1.", f"blocks.{block}.", 1)
            ck[f"dit.{up}"], lands[f"dit.{up}"] = distinct(tuple(state[tgt].shape)), f"transformer.{tgt}"
    for upstream, target in GOLDEN_TOP.items():
        ck[f"dit.{upstream}"], lands[f"dit.{upstream}"] = (
            distinct(tuple(state[target].shape)),
            f"transformer.{target}",
        )
    enc = parts["mllm_encoder"]
    for name in ("image_queries", "video_queries", "ref_queries"):
        ck[f"mllm.{name}.q"], lands[f"mllm.{name}.q"] = (
            distinct(tuple(getattr(enc, name).shape)),
            f"mllm_encoder.{name}",
        )
    for head, upstream in (("connector", "connetor"), ("ref_connector", "ref_connector")):
        for i in (0, 2):
            for p in ("weight", "bias"):
                key = f"mllm.{upstream}.{i}.{p}"
                ck[key] = distinct(tuple(getattr(getattr(enc, head)[i], p).shape))
                lands[key] = f"mllm_encoder.{head}.{i}.{p}"
    for prefix, comp in (("vae_condition", "source_embedder"), ("ref_vae_condition", "ref_embedder")):
        for p in ("weight", "bias"):
            key = f"{prefix}.patch_embedding.{p}"
            ck[key] = distinct(tuple(getattr(parts[comp].patch_embedding, p).shape))
            lands[key] = f"{comp}.patch_embedding.{p}"
    return ck, lands


def test_conversion_of_all_distinct_tensors_puts_each_where_the_table_says() -> None:
    parts = tiny_components(seed=0)
    ck, lands = distinct_checkpoint(parts)
    # the recipe's Qwen LoRA (its names; rank 4, alpha = rank: scale 1) on q, k, v, o of one layer, all distinct
    g = torch.Generator().manual_seed(7)
    attn = parts["mllm_encoder"].mllm.model.language_model.layers[0].self_attn
    base = {p: getattr(attn, f"{p}_proj").weight.detach().clone() for p in "qkvo"}
    for p in "qkvo":
        out_f, in_f = base[p].shape
        ck[f"pipe.mllm.model.model.language_model.layers.0.self_attn.{p}_proj.lora_A.default.weight"] = (
            torch.randn(4, in_f, generator=g)
        )
        ck[f"pipe.mllm.model.model.language_model.layers.0.self_attn.{p}_proj.lora_B.default.weight"] = (
            torch.randn(out_f, 4, generator=g)
        )
    assert unmapped_keys(ck) == []
    pipe, report = convert_checkpoint(
        ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"]
    )
    assert len(report.dit_full_weights) == sum(k.startswith("dit.") for k in ck)
    assert sorted(report.mllm_lora_merged) == sorted(
        f"mllm.model.model.language_model.layers.0.self_attn.{p}_proj" for p in "qkvo"
    )
    converted = {
        f"{name}.{k}": v
        for name in ("transformer", "mllm_encoder", "source_embedder", "ref_embedder")
        for k, v in getattr(pipe, name).state_dict().items()
    }
    for key, target in lands.items():
        assert torch.equal(converted[target], ck[key]), f"{key} did not land in {target}"
    assert len(set(lands.values())) == len(lands)  # no two keys share a target
    for p in "qkvo":
        a = ck[f"pipe.mllm.model.model.language_model.layers.0.self_attn.{p}_proj.lora_A.default.weight"]
        b = ck[f"pipe.mllm.model.model.language_model.layers.0.self_attn.{p}_proj.lora_B.default.weight"]
        torch.testing.assert_close(getattr(attn, f"{p}_proj").weight, base[p] + b @ a)
