"""Checkpoint conversion, piece by piece: safe loading, key normalisation, the DiT name table read in
both directions, encoder and Qwen LoRA names, LoRA merging, and every way a checkpoint is refused
(with the offending keys named) or reported; ``convert_checkpoint``'s defaults and ``load_component``.
"""

from __future__ import annotations

import logging
import re
from typing import ClassVar

import pytest
import torch
from pipeline_fixtures import one_by_one_patch_transformer
from safetensors.torch import save_file
from test_convert import GOLDEN_BLOCK, GOLDEN_TOP, synthetic_checkpoint

from sparkle_video.models import tiny_components
from sparkle_video.pipelines.convert import (
    _BLOCK_MAP,
    _TOP_MAP,
    CheckpointError,
    ConversionReport,
    apply_checkpoint,
    convert_checkpoint,
    encoder_name,
    load_checkpoint,
    load_component,
    map_dit_name,
    normalize_key,
    qwen_candidates,
    unmapped_keys,
)


def parts_and_minimal() -> tuple[dict, dict[str, torch.Tensor]]:
    """Fresh tiny components and the smallest checkpoint they accept (the four required parts)."""
    parts = tiny_components(seed=0)
    enc, src = parts["mllm_encoder"], parts["source_embedder"]
    g = torch.Generator().manual_seed(11)
    ck = {
        "mllm.video_queries.q": torch.randn(*enc.video_queries.shape, generator=g),
        "mllm.connetor.0.weight": torch.randn(*enc.connector[0].weight.shape, generator=g),
        "mllm.connetor.2.weight": torch.randn(*enc.connector[2].weight.shape, generator=g),
        "vae_condition.patch_embedding.weight": torch.randn(*src.patch_embedding.weight.shape, generator=g),
    }
    return parts, ck


def apply(parts: dict, ck: dict[str, torch.Tensor], **kw) -> ConversionReport:
    return apply_checkpoint(
        ck, parts["transformer"], parts["mllm_encoder"], parts["source_embedder"], parts["ref_embedder"], **kw
    )


def lora(
    ck: dict, target: str, out_f: int, in_f: int, rank: int = 2, seed: int = 0, suffix: str = ".default"
):
    g = torch.Generator().manual_seed(seed)
    a = ck[f"{target}.lora_A{suffix}.weight"] = torch.randn(rank, in_f, generator=g)
    b = ck[f"{target}.lora_B{suffix}.weight"] = torch.randn(out_f, rank, generator=g)
    return a, b


# -- the report --------------------------------------------------------------------------------
def test_report_summary_counts_each_list() -> None:
    report = ConversionReport(dit_lora_merged=["a", "b"], encoder_weights=["c"])
    assert report.total == 3
    assert report.summary() == (
        "dit_lora_merged: 2, dit_full_weights: 0, mllm_lora_merged: 0, encoder_weights: 1, embedder_weights: 0"
    )


# -- load_checkpoint -----------------------------------------------------------------------------
@pytest.mark.parametrize("wrapper", ["state_dict", "module", "model"])
def test_trainer_wrappers_are_unwrapped(tmp_path, wrapper: str) -> None:
    path = tmp_path / "ck.pt"
    torch.save({wrapper: {"a": torch.ones(2)}, "epoch": 3}, path)
    state = load_checkpoint(path)
    assert list(state) == ["a"] and torch.equal(state["a"], torch.ones(2))


def test_wrappers_are_unwrapped_in_order_and_tensors_named_like_one_are_kept(tmp_path) -> None:
    nested = tmp_path / "nested.bin"
    torch.save({"state_dict": {"module": {"model": {"a": torch.ones(1)}}}}, nested)
    assert list(load_checkpoint(nested)) == ["a"]
    flat = tmp_path / "flat.pth"
    torch.save({"model": torch.ones(1), "module": torch.zeros(1)}, flat)  # tensors, not wrappers
    assert sorted(load_checkpoint(flat)) == ["model", "module"]
    backwards = tmp_path / "backwards.pth"  # "model" holding "module": only the outer one is a wrapper
    torch.save({"model": {"module": {"a": torch.ones(1)}}}, backwards)
    with pytest.raises(CheckpointError, match="does not hold a flat name -> tensor state dict"):
        load_checkpoint(backwards)


def test_non_tensor_contents_are_refused(tmp_path) -> None:
    mixed = tmp_path / "mixed.pth"
    torch.save({"a": torch.ones(1), "step": 5}, mixed)
    with pytest.raises(
        CheckpointError, match=rf"^{re.escape(str(mixed))} does not hold a flat name -> tensor"
    ):
        load_checkpoint(mixed)
    listed = tmp_path / "list.pth"
    torch.save([torch.ones(1)], listed)
    with pytest.raises(CheckpointError, match="does not hold a flat name -> tensor state dict"):
        load_checkpoint(listed)


def test_torch_files_are_always_read_weights_only_onto_the_cpu(tmp_path, monkeypatch) -> None:
    """Also on torch < 2.6, whose ``torch.load`` unpickles arbitrary objects by default."""
    calls: list[dict] = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: (calls.append(k), original(*a, **k))[1])
    path = tmp_path / "ck.pth"
    torch.save({"a": torch.ones(1)}, path)
    load_checkpoint(path)
    assert calls == [{"map_location": "cpu", "weights_only": True}]


def test_safetensors_is_chosen_by_the_suffix(tmp_path, monkeypatch) -> None:
    """A ``.safetensors`` file is read by safetensors, never by ``torch.load`` (which reads it only on
    recent torch); any other name goes to ``torch.load``."""
    calls: list[str] = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda path, **k: (calls.append(str(path)), original(path, **k))[1])
    path = tmp_path / "ck.safetensors"
    save_file({"b": torch.arange(3.0)}, str(path))
    assert torch.equal(load_checkpoint(path)["b"], torch.arange(3.0))
    assert calls == []
    other = tmp_path / "ck.SAFETENSORS.pth"
    torch.save({"c": torch.ones(1)}, other)
    assert list(load_checkpoint(other)) == ["c"]
    assert calls == [str(other)]


# -- names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, expected",
    [
        ("pipe.dit.blocks.0.self_attn.q.weight", "blocks.0.self_attn.q.weight"),
        ("dit.pipe.blocks.0.norm3.bias", "blocks.0.norm3.bias"),  # any order, repeatedly
        ("diffusion_model.dit.pipe.head.head.weight", "head.head.weight"),
        ("pipe.pipe.mllm.video_queries.q", "mllm.video_queries.q"),
        ("mllm.pipe.x", "mllm.pipe.x"),  # only leading prefixes
        ("blocks.0.ffn.0.weight", "blocks.0.ffn.0.weight"),
    ],
)
def test_normalize_key(key: str, expected: str) -> None:
    assert normalize_key(key) == expected


def test_dit_names_read_backwards_give_the_upstream_names() -> None:
    """The same table maps diffusers names back (what exporting a trained DiT uses)."""
    top = {v: k for k, v in _TOP_MAP.items()}
    block = {v: k for k, v in _BLOCK_MAP.items()}
    for upstream, diffusers_name in {**GOLDEN_BLOCK, **GOLDEN_TOP}.items():
        assert map_dit_name(diffusers_name, top, block) == upstream
    assert map_dit_name("blocks.12.attn2.to_out.0.bias", top, block) == "blocks.12.cross_attn.o.bias"
    assert map_dit_name("blocks.0.attn1.to_q.lora", top, block) is None


@pytest.mark.parametrize(
    "key, expected",
    [
        ("mllm.image_queries.q", "image_queries"),
        ("mllm.video_queries.q", "video_queries"),
        ("mllm.ref_queries.q", "ref_queries"),
        ("mllm.connetor.0.weight", "connector.0.weight"),  # upstream's spelling
        ("mllm.connector.2.bias", "connector.2.bias"),
        ("mllm.ref_connector.0.bias", "ref_connector.0.bias"),
        ("mllm.ref_connector.2.weight", "ref_connector.2.weight"),
        ("mllm.connector.2.scale", None),
        ("mllm.connector.12.weight", None),
        ("connector.0.weight", None),
        ("mllm.video_queries", None),
    ],
)
def test_encoder_names(key: str, expected: str | None) -> None:
    assert encoder_name(key) == expected


@pytest.mark.parametrize(
    "target, expected",
    [
        (
            "mllm.model.model.layers.0.self_attn.q_proj",
            [
                "mllm.model.language_model.layers.0.self_attn.q_proj",
                "mllm.model.layers.0.self_attn.q_proj",
                "mllm.model.layers.0.self_attn.q_proj",
                "mllm.model.model.layers.0.self_attn.q_proj",
            ],
        ),
        (
            "mllm.model.layers.1.mlp.up_proj",
            [
                "mllm.model.language_model.layers.1.mlp.up_proj",
                "mllm.model.layers.1.mlp.up_proj",
                "mllm.layers.1.mlp.up_proj",
                "mllm.model.layers.1.mlp.up_proj",
            ],
        ),
        (
            "layers.2.self_attn.v_proj",
            [
                "mllm.model.language_model.layers.2.self_attn.v_proj",
                "mllm.model.layers.2.self_attn.v_proj",
                "mllm.layers.2.self_attn.v_proj",
                "mllm.layers.2.self_attn.v_proj",
            ],
        ),
    ],
)
def test_qwen_lora_candidates(target: str, expected: list[str]) -> None:
    assert qwen_candidates(target) == expected


def test_unmapped_keys_lists_every_unknown_key_in_order() -> None:
    keys = [
        "pipe.mllm.model.layers.0.self_attn.q_proj.lora_A.default.weight",  # Qwen LoRA: checked later
        "mystery.a",
        "pipe.vae_condition.patch_embedding.weight",
        "mystery.b",
        "mllm.connetor.0.weight",
        "mystery.c",
        "ref_vae_condition.patch_embedding.bias",
        "dit.blocks.0.self_attn.q.lora_B.weight",  # DiT LoRA on a known module
        "dit.blocks.0.self_attn.zz.lora_B.weight",  # DiT LoRA on an unknown one
        "mllm.mystery.weight",  # not a LoRA factor: an encoder name or nothing
        "blocks.0.modulation",
    ]
    assert unmapped_keys(keys) == [
        "mystery.a",
        "mystery.b",
        "mystery.c",
        "dit.blocks.0.self_attn.zz.lora_B.weight",
        "mllm.mystery.weight",
    ]


# -- apply_checkpoint ----------------------------------------------------------------------------
def test_minimal_checkpoint_lands_and_is_reported() -> None:
    parts, ck = parts_and_minimal()
    ck["pipe.ref_vae_condition.patch_embedding.bias"] = torch.full((16,), 0.5)
    ck["dit.blocks.1.norm3.weight"] = torch.full((16,), 2.0, dtype=torch.float64)  # cast to the model's
    report = apply(parts, ck)
    assert report.encoder_weights == ["video_queries", "connector.0.weight", "connector.2.weight"]
    assert report.embedder_weights == [
        "source_embedder.patch_embedding.weight",
        "ref_embedder.patch_embedding.bias",
    ]
    assert report.dit_full_weights == ["blocks.1.norm2.weight"]
    assert report.dit_lora_merged == report.mllm_lora_merged == []
    enc = parts["mllm_encoder"]
    assert torch.equal(enc.video_queries.data, ck["mllm.video_queries.q"])
    assert torch.equal(enc.connector[0].weight.data, ck["mllm.connetor.0.weight"])
    assert torch.equal(
        parts["source_embedder"].patch_embedding.weight.data, ck["vae_condition.patch_embedding.weight"]
    )
    assert torch.equal(parts["ref_embedder"].patch_embedding.bias.data, torch.full((16,), 0.5))
    norm = parts["transformer"].blocks[1].norm2.weight
    assert norm.dtype == torch.float32 and torch.equal(norm.data, torch.full((16,), 2.0))


def test_conversion_is_logged(caplog) -> None:
    parts, ck = parts_and_minimal()
    with caplog.at_level(logging.INFO, logger="sparkle_video"):
        apply(parts, ck)
    assert caplog.messages[-1] == (
        "converted 4 tensors (dit_lora_merged: 0, dit_full_weights: 0, mllm_lora_merged: 0, "
        "encoder_weights: 3, embedder_weights: 1)"
    )


@pytest.mark.parametrize("suffix", [".default", ""])
def test_lora_merge_default_scale_is_one(suffix: str) -> None:
    parts, ck = parts_and_minimal()
    base = parts["transformer"].blocks[0].attn2.to_v.weight.detach().clone()
    a, b = lora(ck, "pipe.dit.blocks.0.cross_attn.v", 16, 16, suffix=suffix)
    report = apply(parts, ck)
    assert report.dit_lora_merged == ["blocks.0.cross_attn.v"]
    torch.testing.assert_close(parts["transformer"].blocks[0].attn2.to_v.weight.data, base + b @ a)


def test_lora_on_a_convolution_is_merged_through_its_flattened_kernel() -> None:
    parts, ck = parts_and_minimal()
    conv = parts["transformer"].patch_embedding  # (16, 8, 1, 2, 2)
    base = conv.weight.detach().clone()
    g = torch.Generator().manual_seed(5)
    a = ck["patch_embedding.lora_A.weight"] = torch.randn(3, 8, 1, 2, 2, generator=g)
    b = ck["patch_embedding.lora_B.weight"] = torch.randn(16, 3, 1, 1, 1, generator=g)
    report = apply(parts, ck, lora_alpha=0.25)
    assert report.dit_lora_merged == ["patch_embedding"]
    expected = base + 0.25 * (b.flatten(1) @ a.flatten(1)).reshape(base.shape)
    torch.testing.assert_close(conv.weight.data, expected)


def test_qwen_lora_is_found_under_any_of_its_names() -> None:
    parts, ck = parts_and_minimal()
    attn = parts["mllm_encoder"].mllm.model.language_model.layers[1].self_attn
    base = attn.k_proj.weight.detach().clone()
    out_f, in_f = base.shape
    a, b = lora(ck, "mllm.layers.1.self_attn.k_proj", out_f, in_f)
    report = apply(parts, ck, lora_alpha=3.0)
    assert report.mllm_lora_merged == ["mllm.layers.1.self_attn.k_proj"]
    torch.testing.assert_close(attn.k_proj.weight.data, base + 3.0 * b @ a)


def test_each_merge_lands_in_the_weight_dtype() -> None:
    """Two LoRA pairs on one bfloat16 weight (two spellings of one Qwen layer) merge one after the
    other, each result stored in bfloat16 as it would be in the model."""
    parts, ck = parts_and_minimal()
    parts["mllm_encoder"].to(torch.bfloat16)
    attn = parts["mllm_encoder"].mllm.model.language_model.layers[0].self_attn
    base = attn.q_proj.weight.detach().clone()
    a1, b1 = lora(ck, "mllm.model.layers.0.self_attn.q_proj", 32, 32, rank=4, seed=1)
    a2, b2 = lora(ck, "mllm.model.model.layers.0.self_attn.q_proj", 32, 32, rank=4, seed=2)
    apply(parts, ck)
    once = (base.float() + b1 @ a1).to(torch.bfloat16)
    twice = (once.float() + b2 @ a2).to(torch.bfloat16)
    assert torch.equal(attn.q_proj.weight.data, twice)
    assert not torch.equal(twice, (base.float() + b1 @ a1 + b2 @ a2).to(torch.bfloat16))


def test_every_lora_pair_is_merged_after_one_is_done() -> None:
    parts, ck = parts_and_minimal()
    lora(ck, "mllm.model.layers.0.self_attn.q_proj", 32, 32, seed=1)
    lora(ck, "mllm.model.layers.1.self_attn.q_proj", 32, 32, seed=2)
    lora(ck, "blocks.0.self_attn.q", 16, 16, seed=3)
    lora(ck, "blocks.1.self_attn.q", 16, 16, seed=4)
    report = apply(parts, ck)
    assert report.mllm_lora_merged == [
        "mllm.model.layers.0.self_attn.q_proj",
        "mllm.model.layers.1.self_attn.q_proj",
    ]
    assert report.dit_lora_merged == ["blocks.0.self_attn.q", "blocks.1.self_attn.q"]
    assert report.total == 8


def test_unknown_keys_are_named_sorted_and_nothing_is_changed() -> None:
    parts, ck = parts_and_minimal()
    before = {k: v.clone() for k, v in parts["mllm_encoder"].state_dict().items()}
    lora(ck, "mllm.model.layers.0.self_attn.nowhere", 32, 32)  # a Qwen target that does not exist
    lora(ck, "blocks.0.self_attn.zz", 16, 16)  # no DiT name
    lora(ck, "blocks.7.self_attn.q", 16, 16)  # a DiT name, but the model has 2 blocks
    ck["mllm.mystery"] = torch.zeros(1)
    ck["blocks.0.self_attn.zz.weight"] = torch.zeros(1)
    ck["blocks.9.norm3.weight"] = torch.zeros(16)
    with pytest.raises(CheckpointError) as err:
        apply(parts, ck)
    expected = sorted(
        [
            "mllm.model.layers.0.self_attn.nowhere.lora_A.default.weight",
            "mllm.model.layers.0.self_attn.nowhere.lora_B.default.weight",
            "blocks.0.self_attn.zz.lora_A.default.weight",
            "blocks.0.self_attn.zz.lora_B.default.weight",
            "blocks.7.self_attn.q.lora_A.default.weight",
            "blocks.7.self_attn.q.lora_B.default.weight",
            "mllm.mystery",
            "blocks.0.self_attn.zz.weight",
            "blocks.9.norm3.weight",
        ]
    )
    assert str(err.value) == f"incompatible checkpoint: 9 unmapped keys {expected}"
    for k, v in parts["mllm_encoder"].state_dict().items():
        assert torch.equal(v, before[k]), k


def test_shape_mismatches_are_described() -> None:
    parts, ck = parts_and_minimal()
    ck["blocks.0.norm3.weight"] = torch.zeros(15)
    lora(ck, "blocks.1.ffn.0", 16, 16)  # product (16, 16) where (32, 16) lives
    with pytest.raises(CheckpointError) as err:
        apply(parts, ck)
    assert str(err.value) == (
        "incompatible checkpoint: ; 2 shape mismatches ['blocks.1.ffn.0.lora_B.default.weight: LoRA product "
        "(16, 16) vs blocks.1.ffn.net.0.proj.weight (32, 16)', 'blocks.0.norm3.weight: (15,) vs "
        "blocks.0.norm2.weight (16,)']"
    )


def test_lora_of_the_right_size_but_the_wrong_shape_is_reshaped() -> None:
    parts, ck = parts_and_minimal()
    base = parts["transformer"].blocks[0].ffn.net[0].proj.weight.detach().clone()  # (32, 16)
    g = torch.Generator().manual_seed(2)
    a = ck["blocks.0.ffn.0.lora_A.weight"] = torch.randn(2, 32, generator=g)
    b = ck["blocks.0.ffn.0.lora_B.weight"] = torch.randn(16, 2, generator=g)  # product (16, 32)
    apply(parts, ck)
    torch.testing.assert_close(
        parts["transformer"].blocks[0].ffn.net[0].proj.weight.data, base + (b @ a).reshape(32, 16)
    )


def test_both_unmapped_and_mismatched_are_reported_together() -> None:
    parts, ck = parts_and_minimal()
    ck["mystery"] = torch.zeros(1)
    ck["mllm.connetor.2.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        apply(parts, ck)
    assert str(err.value) == (
        "incompatible checkpoint: 1 unmapped keys ['mystery']; 1 shape mismatches "
        "['mllm.connetor.2.bias: (3,) vs connector.2.bias (16,)']"
    )


def test_long_lists_of_unmapped_keys_and_mismatches_are_cut() -> None:
    parts, ck = parts_and_minimal()
    for i in range(25):
        ck[f"mystery.{i:02d}"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        apply(parts, ck)
    assert str(err.value) == "incompatible checkpoint: 25 unmapped keys " + str(
        [f"mystery.{i:02d}" for i in range(20)]
    )
    parts, ck = parts_and_minimal()
    wrong = [
        f"blocks.{b}.{attn}.{p}.weight" for b in (0, 1) for attn in ("self_attn", "cross_attn") for p in "qkv"
    ]
    for key in wrong:
        ck[key] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        apply(parts, ck)
    message = str(err.value)
    assert message.startswith("incompatible checkpoint: ; 12 shape mismatches ")
    assert message.count(": (1,) vs ") == 10 and wrong[9] in message and wrong[10] not in message


def test_incomplete_lora_pairs_list_at_most_ten() -> None:
    parts, ck = parts_and_minimal()
    for i in range(11):  # each names the factor it has
        ck[f"blocks.0.self_attn.q{i:02d}.lora_{'AB'[i % 2]}.weight"] = torch.zeros(2, 16)
    with pytest.raises(CheckpointError) as err:
        apply(parts, ck)
    assert str(err.value) == "incomplete LoRA pairs: " + str(
        [f"blocks.0.self_attn.q{i:02d} (only lora_{'AB'[i % 2]})" for i in range(10)]
    )


def test_embedder_keys_that_do_not_fit_are_named() -> None:
    parts, ck = parts_and_minimal()
    ck["pipe.vae_condition.patch_embedding.scale"] = torch.zeros(1)
    ck["ref_vae_condition.patch_embedding.bias"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        apply(parts, ck)
    assert str(err.value) == (
        "incompatible checkpoint: 1 unmapped keys ['pipe.vae_condition.patch_embedding.scale']; 1 shape "
        "mismatches ['ref_vae_condition.patch_embedding.bias: (3,) vs patch_embedding.bias (16,)']"
    )


# -- convert_checkpoint ------------------------------------------------------------------------------
def test_convert_defaults_for_what_a_checkpoint_does_not_hold() -> None:
    parts, ck = parts_and_minimal()  # no image/ref queries, no reference embedder, no LoRA
    base = parts["transformer"].blocks[0].attn1.to_k.weight.detach().clone()
    a, b = lora(ck, "blocks.0.self_attn.k", 16, 16)
    pipe, report = convert_checkpoint(
        ck, parts["transformer"], parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"]
    )
    enc = pipe.mllm_encoder
    assert enc.config.num_image_queries == 256 and enc.image_queries.shape[0] == 256
    assert enc.config.num_ref_queries == 512 and enc.ref_queries.shape[0] == 512
    assert enc.config.num_video_queries == 8
    assert enc.config.dit_dim == 16
    assert enc.config.max_ref_pixels == 28 * 28 * 768
    assert pipe.ref_embedder is None
    assert pipe.source_embedder.config.in_channels == 8 and tuple(pipe.source_embedder.config.patch_size) == (
        1,
        2,
        2,
    )
    assert pipe.transformer is parts["transformer"] and pipe.vae is parts["vae"]
    assert pipe.tokenizer is parts["tokenizer"]
    assert pipe.scheduler.config.shift == 5.0
    torch.testing.assert_close(pipe.transformer.blocks[0].attn1.to_k.weight.data, base + b @ a)
    assert report.dit_lora_merged == ["blocks.0.self_attn.k"]
    assert pipe.transformer.dtype == torch.float32


def test_convert_reference_model_settings_and_dtype() -> None:
    parts = tiny_components(seed=0)
    ck = synthetic_checkpoint(parts)
    pipe, _ = convert_checkpoint(
        ck,
        parts["transformer"],
        parts["vae"],
        parts["mllm_encoder"].mllm,
        tokenizer=parts["tokenizer"],
        torch_dtype=torch.bfloat16,
        max_ref_tokens=3,
    )
    assert pipe.ref_embedder is not None and pipe.ref_embedder.config.ref_pad_first is False
    assert pipe.ref_embedder.config.in_channels == 8 and pipe.ref_embedder.patch_embedding.weight.shape == (
        16,
        8,
        1,
        2,
        2,
    )
    assert pipe.mllm_encoder.config.max_ref_pixels == 28 * 28 * 3
    assert pipe.mllm_encoder.config.num_image_queries == 4 and pipe.mllm_encoder.config.num_ref_queries == 8
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.mllm_encoder.dtype == torch.bfloat16
    assert pipe.ref_embedder.patch_embedding.weight.dtype == torch.bfloat16


def test_convert_builds_the_embedders_with_the_transformer_patch_size() -> None:
    parts, ck = parts_and_minimal()
    dit = one_by_one_patch_transformer()
    ck["vae_condition.patch_embedding.weight"] = torch.randn(16, 8, 1, 1, 1)
    ck["ref_vae_condition.patch_embedding.weight"] = torch.randn(16, 8, 1, 1, 1)
    pipe, _ = convert_checkpoint(
        ck, dit, parts["vae"], parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"], ref_pad_first=True
    )
    for embedder in (pipe.source_embedder, pipe.ref_embedder):
        assert tuple(embedder.config.patch_size) == (1, 1, 1)
        assert tuple(embedder.patch_embedding.weight.shape) == (16, 8, 1, 1, 1)
    assert pipe.ref_embedder.config.ref_pad_first is True
    assert torch.equal(
        pipe.ref_embedder.patch_embedding.weight.data, ck["ref_vae_condition.patch_embedding.weight"]
    )


def test_convert_loads_base_models_from_pipeline_or_component_folders(tmp_path) -> None:
    parts, ck = parts_and_minimal()
    parts["vae"].save_pretrained(tmp_path / "wan" / "vae")  # a pipeline-style folder
    parts["transformer"].save_pretrained(tmp_path / "dit")  # the component's own folder
    pipe, _ = convert_checkpoint(
        ck, tmp_path / "dit", tmp_path / "wan", parts["mllm_encoder"].mllm, tokenizer=parts["tokenizer"]
    )
    for name in ("vae", "transformer"):
        loaded, original = getattr(pipe, name).state_dict(), parts[name].state_dict()
        assert loaded.keys() == original.keys()
        assert all(torch.equal(loaded[k], original[k]) for k in original)


# -- load_component -------------------------------------------------------------------------------
class Recorder:
    """Stands in for a diffusers model class: records how ``from_pretrained`` is called."""

    calls: ClassVar[list[tuple[str, str | None]]] = []
    fail_with_subfolder = False

    @classmethod
    def from_pretrained(cls, path: str, subfolder: str | None = None) -> str:
        cls.calls.append((path, subfolder))
        if subfolder is not None and cls.fail_with_subfolder:
            raise OSError("no such subfolder")
        return "loaded"


@pytest.fixture(name="recorder")
def recorder_fixture():
    Recorder.calls = []
    Recorder.fail_with_subfolder = False
    return Recorder


def test_component_folder_is_loaded_as_is(tmp_path, recorder) -> None:
    (tmp_path / "vae").mkdir()
    (tmp_path / "other").mkdir()
    assert load_component(recorder, tmp_path / "other", "vae") == "loaded"
    assert recorder.calls == [(str(tmp_path / "other"), None)]


def test_pipeline_folder_is_loaded_from_its_subfolder(tmp_path, recorder) -> None:
    (tmp_path / "vae").mkdir()
    assert load_component(recorder, tmp_path, "vae") == "loaded"
    assert recorder.calls == [(str(tmp_path), "vae")]


def test_hub_id_tries_the_subfolder_then_the_repo_root(recorder) -> None:
    assert load_component(recorder, "org/pipeline-repo", "transformer") == "loaded"
    assert recorder.calls == [("org/pipeline-repo", "transformer")]
    recorder.calls.clear()
    recorder.fail_with_subfolder = True
    assert load_component(recorder, "org/component-repo", "transformer") == "loaded"
    assert recorder.calls == [("org/component-repo", "transformer"), ("org/component-repo", None)]
