"""Qwen-VL VLM and EditScore scorer backends: reply parsers, input layout, tiny random-weight models, peft."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from backend_fixtures import random_image
from PIL import Image

from sparkle_video.errors import SparkleDataError
from sparkle_video.generation.backends.editscore import (
    editscore_from_scores,
    parse_score_reply,
)
from sparkle_video.generation.backends.protocols import EditScore, GroundedObject, VisionLanguageModel
from sparkle_video.generation.backends.qwen_vl import (
    extract_json,
    match_labels,
    normalise_box,
    parse_camera,
    parse_grounding,
    parse_instruction,
)
from sparkle_video.generation.backends.registry import build_backend


def _image(seed: int, height: int = 40, width: int = 60) -> np.ndarray:
    return random_image(seed, height, width)


# -- grounding parser -------------------------------------------------------------------------------
def test_grounding_parses_fenced_json_with_prose():
    reply = (
        "Here are the objects:\n```json\n"
        '[{"label": "person", "bbox_2d": [100, 200, 400, 900]},\n {"label": "dog", "bbox_2d": [500, 600, 700, 950]}]\n'
        "```\nHope this helps."
    )
    assert parse_grounding(reply) == [
        GroundedObject("person", (100, 200, 400, 900)),
        GroundedObject("dog", (500, 600, 700, 950)),
    ]


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "   ",
        "[]",
        "no objects here",
        "[{]",
        '{"label": ',
        "null",
        "42",
        '["person", "dog"]',
        "```json\n```",
    ],
)
def test_grounding_malformed_or_empty_gives_nothing(reply):
    assert parse_grounding(reply) == []


def test_grounding_out_of_range_and_malformed_boxes():
    reply = """[
      {"label": "person", "bbox_2d": [-50, 10, 1200, 900]},
      {"label": "flipped", "bbox_2d": [700, 800, 300, 200]},
      {"label": "outside", "bbox_2d": [1100, 1100, 1300, 1200]},
      {"label": "flat", "bbox_2d": [100, 100, 100, 500]},
      {"label": "short", "bbox_2d": [1, 2, 3]},
      {"label": "words", "bbox_2d": ["a", 2, 3, 4]},
      {"label": "strings", "bbox_2d": ["10", "20", "30.4", "40.6"]},
      {"label": "nan", "bbox_2d": [NaN, 1, 2, 3]},
      {"label": "", "bbox_2d": [1, 2, 3, 4]},
      {"bbox_2d": [1, 2, 3, 4]},
      {"name": "cat", "bbox": [10, 20, 30, 40]},
      "a stray string"
    ]"""
    got = parse_grounding(reply)
    assert got == [
        GroundedObject("person", (0, 10, 1000, 900)),
        GroundedObject("flipped", (300, 200, 700, 800)),
        GroundedObject("outside", ()),
        GroundedObject("flat", ()),
        GroundedObject("short", ()),
        GroundedObject("words", ()),
        GroundedObject("strings", (10, 20, 30, 41)),
        GroundedObject("nan", ()),
        GroundedObject("cat", (10, 20, 30, 40)),
    ]


def test_grounding_single_object_and_wrapped_list():
    assert parse_grounding('{"label": "car", "bbox_2d": [1, 2, 30, 40]}') == [
        GroundedObject("car", (1, 2, 30, 40))
    ]
    wrapped = '{"objects": [{"label": "car", "bbox_2d": [1, 2, 30, 40]}]}'
    assert parse_grounding(wrapped) == [GroundedObject("car", (1, 2, 30, 40))]


def test_qwen25_pixel_boxes_become_the_1000_frame():
    # Qwen2.5-VL answers in pixels of the image it saw (here 280 x 560)
    assert normalise_box([56, 28, 280, 280], box_format="qwen2.5", image_size=(280, 560)) == (
        100,
        100,
        500,
        1000,
    )
    assert normalise_box([0, 0, 900, 300], box_format="qwen2.5", image_size=(280, 560)) == (0, 0, 1000, 1000)
    with pytest.raises(ValueError, match="image_size"):
        normalise_box([1, 2, 3, 4], box_format="qwen2.5")
    with pytest.raises(ValueError, match="box_format"):
        normalise_box([1, 2, 3, 4], box_format="yolo")


def test_match_labels_keeps_order_and_marks_missing():
    found = [
        GroundedObject("Dog", (1, 2, 3, 4)),
        GroundedObject("person", (5, 6, 7, 8)),
        GroundedObject("dog", ()),
    ]
    assert match_labels(found, ["person", "dog", "cat"]) == [
        GroundedObject("person", (5, 6, 7, 8)),
        GroundedObject("dog", (1, 2, 3, 4)),
        GroundedObject("cat", ()),
    ]


def test_instruction_and_camera_parsers():
    got = parse_instruction(
        '```json\n{"original_scene": "a kitchen", "prompt": "Replace the background."}\n```'
    )
    assert got.prompt == "Replace the background." and got.original_scene == "a kitchen"
    assert (
        parse_instruction("Replace the background with a beach.").prompt
        == "Replace the background with a beach."
    )
    assert parse_instruction('{"prompt": ""}') is None
    assert parse_instruction("") is None and parse_instruction("[1, 2]") is None
    assert parse_camera('{"static": false, "reason": "pans left"}').static is False
    assert parse_camera('{"static": "yes"}').static is True
    assert parse_camera("Yes, the camera does not move.").static is True
    assert parse_camera("No - it pans.").static is False
    assert parse_camera('{"static": 3}') is None and parse_camera("maybe") is None
    assert extract_json("prefix {bad} then [1, 2]") == [1, 2]


# -- EditScore parser ----------------------------------------------------------------------------------
def test_score_reply_published_schema():
    sc = parse_score_reply('```json\n{"reasoning": "follows it", "score": [20, 25]}\n```')
    pq = parse_score_reply('{"reasoning": "clean", "score": [22.5, 15]}')
    assert sc == ([20.0, 25.0], "follows it") and pq == ([22.5, 15.0], "clean")
    record = editscore_from_scores(sc[0], pq[0], sc[1], pq[1])
    assert isinstance(record, EditScore)
    assert record.prompt_following == 8.0 and record.consistency == 10.0
    assert record.perceptual_quality == 6.0
    assert math.isclose(record.overall, math.sqrt(8.0 * 6.0))
    assert record.SC_reasoning == "follows it" and record.PQ_reasoning == "clean"
    assert set(vars(record)) == {
        "prompt_following",
        "consistency",
        "perceptual_quality",
        "overall",
        "SC_reasoning",
        "PQ_reasoning",
    }


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "score: 20",
        '{"reasoning": "x"}',
        '{"score": [20]}',
        '{"score": [20, 30]}',
        '{"score": [-1, 5]}',
        '{"score": [true, 5]}',
        '{"score": ["20", 5]}',
        '{"score": [20, 5, 5]}',
        "[20, 5]",
    ],
)
def test_score_reply_off_format_is_none(reply):
    assert parse_score_reply(reply) is None


def test_score_reply_missing_reasoning_is_empty():
    assert parse_score_reply('{"score": [0, 25]}') == ([0.0, 25.0], "")


# -- tiny models ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vlm():
    return build_backend("vlm", "qwen-vl", {"tiny": True})


def test_qwen_inputs_expand_image_tokens_as_the_processor(vlm):
    chat = vlm.chat
    inputs = chat.prepare([([_image(0), _image(1, 64, 32)], "describe")])
    ids = inputs.tensors["input_ids"][0]
    grid = inputs.tensors["image_grid_thw"]
    merge = chat.image_processor.merge_size
    assert int((ids == chat.image_token_id).sum()) == int(grid.prod(dim=1).sum()) // merge**2
    assert torch.equal(inputs.tensors["mm_token_type_ids"][0], (ids == chat.image_token_id).to(torch.int32))
    assert inputs.tensors["pixel_values"].shape[0] == int(grid.prod(dim=1).sum())
    patch = chat.image_processor.patch_size
    assert inputs.image_sizes == [[(int(g[1]) * patch, int(g[2]) * patch) for g in grid]]
    assert all(h % (patch * merge) == 0 and w % (patch * merge) == 0 for h, w in inputs.image_sizes[0])


@pytest.mark.parametrize("family", ["qwen3", "qwen2.5"])
def test_qwen_text_matches_the_processors_image_token_expansion(family):
    """The processor class cannot be built without torchvision; its expansion method is the oracle."""
    from types import SimpleNamespace

    from transformers import Qwen2_5_VLProcessor, Qwen3VLProcessor

    from sparkle_video.generation.backends.qwen_vl import tiny_qwen_chat

    chat = tiny_qwen_chat(family)
    processor_cls = Qwen3VLProcessor if family == "qwen3" else Qwen2_5_VLProcessor
    fake = SimpleNamespace(image_processor=chat.image_processor, image_token="<|image_pad|>")
    images = [_image(0), _image(1, 64, 32)]
    inputs = chat.prepare([(images, "describe")])
    grid = {"image_grid_thw": inputs.tensors["image_grid_thw"]}
    template = chat.tokenizer.apply_chat_template(
        [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "describe"}],
            }
        ],
        tokenize=False,
        add_generation_prompt=True,
    )
    pieces = template.split("<|image_pad|>")
    expected = pieces[0]
    for i, piece in enumerate(pieces[1:]):
        expected += processor_cls.replace_image_token(fake, grid, i) + piece
    ids = chat.tokenizer(expected, return_tensors="pt")["input_ids"]
    assert torch.equal(inputs.tensors["input_ids"], ids)
    # pixel values are the stock PIL image processor's output for the same images
    stock = chat.image_processor(images=[Image.fromarray(im) for im in images], return_tensors="pt")
    assert torch.equal(inputs.tensors["pixel_values"], stock["pixel_values"])


def test_qwen_vlm_plumbing(vlm):
    assert isinstance(vlm, VisionLanguageModel)
    assert (
        vlm.chat.model.__class__.__name__ == "Qwen3VLForConditionalGeneration" and vlm.box_format == "qwen3"
    )
    frame = _image(2)
    replies, _ = vlm.chat.generate([([frame], "hello")], seed=0)
    assert isinstance(replies[0], str) and replies == vlm.chat.generate([([frame], "hello")], seed=0)[0]
    objects = vlm.ground(frame)  # random weights: whatever came back is well formed
    assert all(o.label and len(o.bbox_2d) == 4 for o in objects)
    frames = [_image(i) for i in range(5)]
    found = vlm.relocate(frames, ["person", "dog"])
    assert len(found) == 5 and all([o.label for o in row] == ["person", "dog"] for row in found)
    assert all(o.bbox_2d == () or all(0 <= v <= 1000 for v in o.bbox_2d) for row in found for o in row)
    assert vlm.relocate(frames, []) == [[] for _ in frames]


def test_qwen_vlm_unusable_reply_is_an_error_naming_it(vlm, monkeypatch):
    monkeypatch.setattr(
        vlm.chat, "generate", lambda chats, **kw: (["@@@ not json"] * len(chats), [[(32, 32)]] * len(chats))
    )
    with pytest.raises(SparkleDataError, match="@@@ not json"):
        vlm.judge_static_camera([_image(0)] * 3)
    with pytest.raises(SparkleDataError, match="instruction"):
        vlm.compose_instruction(_image(0), "location", "urban: rooftop")


def test_qwen_vlm_scripted_replies_reach_the_protocol(vlm, monkeypatch):
    replies = {
        "instruction": '{"original_scene": "an office", "prompt": "Replace the background with a beach."}',
        "camera": '{"static": true, "reason": "tripod"}',
        "ground": '[{"label": "person", "bbox_2d": [10, 20, 300, 900]}, {"label": "ghost", "bbox_2d": [5, 5, 5, 5]}]',
    }
    seen = []

    def scripted(chats, **kw):
        seen.extend(chats)
        text = chats[0][1]
        key = "instruction" if "instruction" in text else "camera" if "camera" in text else "ground"
        return [replies[key]] * len(chats), [[(32, 64)] * len(c[0]) for c in chats]

    monkeypatch.setattr(vlm.chat, "generate", scripted)
    assert vlm.compose_instruction(_image(0), "location", "rural: vineyard").original_scene == "an office"
    assert "rural: vineyard" in seen[-1][1]
    assert vlm.judge_static_camera([_image(i) for i in range(20)]).static is True
    assert len(seen[-1][0]) == 8  # camera_frames evenly spread over the clip
    assert vlm.ground(_image(0)) == [
        GroundedObject("person", (10, 20, 300, 900))
    ]  # the box-less one is left out


def test_qwen25_family_and_option_checks():
    vlm25 = build_backend("vlm", "qwen-vl", {"tiny": True, "family": "qwen2.5", "max_new_tokens": 4})
    assert vlm25.box_format == "qwen2.5"
    replies, sizes = vlm25.chat.generate([([_image(3)], "x")])
    assert len(replies) == 1 and len(sizes[0]) == 1
    with pytest.raises(ValueError, match="'prompt_style'"):
        build_backend("vlm", "qwen-vl", {"tiny": True, "prompt_style": "short"})
    with pytest.raises(ValueError, match="family"):
        build_backend("vlm", "qwen-vl", {"tiny": True, "family": "llava"})


def test_editscore_tiny_scores_scripted_and_falls_back_on_garbage(monkeypatch):
    scorer = build_backend("scorer", "editscore", {"tiny": True, "max_attempts": 2})
    assert scorer.chat.model.__class__.__name__ == "Qwen2_5_VLForConditionalGeneration"
    src, edited = _image(0), _image(1)
    garbage = scorer.score(src, edited, "make it snow")  # random weights: no reply parses
    assert (garbage.prompt_following, garbage.consistency, garbage.perceptual_quality) == (5.0, 5.0, 5.0)
    assert garbage.overall == 5.0 and garbage.SC_reasoning == "unusable reply, counted as 12.5"
    calls = []

    def scripted(chats, seed=0, **kw):
        calls.append((seed, [len(images) for images, _ in chats]))
        if len(calls) == 1:  # first attempt: SC off format, PQ fine
            return ['{"score": [99, 1]}', '{"reasoning": "ok", "score": [25, 20]}'], [[], []]
        return ['{"reasoning": "good", "score": [20, 25]}'], [[]]

    monkeypatch.setattr(scorer.chat, "generate", scripted)
    record = scorer.score(src, edited, "make it snow")
    assert calls == [(42, [2, 1]), (43, [2])]  # EditScore's seed 42; only the off-format one again, next seed
    assert (record.prompt_following, record.consistency, record.perceptual_quality) == (8.0, 10.0, 8.0)
    assert math.isclose(record.overall, 8.0)


def test_editscore_loads_a_peft_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    from sparkle_video.generation.backends.qwen_vl import tiny_qwen_chat

    base = tiny_qwen_chat("qwen2.5", 0).model
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    plain = build_backend("scorer", "editscore", {"tiny": True, "seed": 0})
    adapted = build_backend(
        "scorer", "editscore", {"tiny": True, "seed": 0, "adapter_id": str(tmp_path / "adapter")}
    )
    name = "model.language_model.layers.0.self_attn.q_proj.weight"
    a = dict(adapted.chat.model.named_parameters())[name]
    b = dict(plain.chat.model.named_parameters())[name]
    assert a.shape == b.shape and not torch.equal(a, b)  # merged LoRA changed the attention weights
    k = dict(adapted.chat.model.named_parameters())["model.language_model.layers.0.self_attn.k_proj.weight"]
    assert torch.equal(
        k, dict(plain.chat.model.named_parameters())["model.language_model.layers.0.self_attn.k_proj.weight"]
    )
    unmerged = build_backend(
        "scorer",
        "editscore",
        {"tiny": True, "seed": 0, "adapter_id": str(tmp_path / "adapter"), "merge_adapter": False},
    )
    assert unmerged.chat.model.__class__.__name__ == "PeftModel"
    replies, _ = unmerged.chat.generate([([_image(0)], "x")])
    assert isinstance(replies[0], str)


@pytest.mark.parametrize("family", ["qwen3", "qwen2.5"])
def test_batched_generation_equals_one_by_one(family):
    """Left padding, the attention mask and multimodal RoPE agree: a batch answers as its chats alone."""
    from sparkle_video.generation.backends.qwen_vl import tiny_qwen_chat

    chat = tiny_qwen_chat(family, max_new_tokens=12)
    images = [_image(i, 40 + 8 * i, 60) for i in range(3)]
    chats = [
        ([images[0]], "a"),
        ([images[1], images[2]], "a much longer question here"),
        ([images[2]], "mid"),
    ]
    batched, sizes = chat.generate(chats)
    assert batched == [chat.generate([c])[0][0] for c in chats]
    assert [len(s) for s in sizes] == [1, 2, 1]
