"""VLM role on Qwen3-VL (or Qwen2.5-VL): instructions, foreground grounding and the camera check.

Why the inputs are prepared here: the stock Qwen-VL processors build a video processor, which needs
torchvision (no CPU build for every torch). Frames therefore go to the model as a list of still images,
prepared by the stock ``Qwen2VLImageProcessorPil`` (loaded from the checkpoint, so Qwen3-VL's 16-pixel
patches and 0.5 normalisation come from its own config), and the chat text is expanded as the processor
does: each ``<|image_pad|>`` becomes ``grid_t * grid_h * grid_w / merge_size**2`` copies, and
``mm_token_type_ids`` marks them (1) for multimodal RoPE.

Replies are parsed defensively (:func:`parse_grounding`, :func:`parse_instruction`, :func:`parse_camera`):
code fences, prose around the JSON, single objects instead of lists, missing or malformed boxes and
coordinates outside the frame are all handled, and an unusable reply is an error that names it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ...errors import SparkleDataError
from .. import taxonomy
from .model_support import check_options, resolve_device, tiny_chat_tokenizer, to_pil, torch_dtype
from .protocols import CameraJudgement, GroundedObject, Instruction, Resources, SceneChoice

logger = logging.getLogger("sparkle_video")

BOX_FORMATS = ("qwen3", "qwen2.5")
QWEN_FRAME = 1000


# --------------------------------------------------------------------------------------------------
# Reply parsing (pure functions)
# --------------------------------------------------------------------------------------------------
def extract_json(text: str) -> Any:
    """The first JSON value (object or list) in ``text``, ignoring code fences and prose; ``None`` if none."""
    if not isinstance(text, str):
        return None
    cleaned = re.sub(r"```(?:json)?", "", text)
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", cleaned):
        try:
            value, _ = decoder.raw_decode(cleaned[match.start() :])
        except ValueError:
            continue
        return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
        return number if np.isfinite(number) else None
    return None


def normalise_box(
    box: Any, *, box_format: str = "qwen3", image_size: tuple[int, int] | None = None
) -> tuple[int, int, int, int] | tuple[()]:
    """A reply's box -> ``(x1, y1, x2, y2)`` ints in Qwen's [0, 1000] frame, or ``()`` when unusable.

    ``qwen3`` replies are already in [0, 1000]; ``qwen2.5`` replies are pixels of the image the model saw
    (``image_size = (height, width)`` of that image), converted here. Corners are ordered, coordinates
    clipped to the frame; a box with no area left inside the frame is unusable.
    """
    if box_format not in BOX_FORMATS:
        raise ValueError(f"box_format must be one of {', '.join(BOX_FORMATS)}, got {box_format!r}")
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return ()
    numbers = [_number(v) for v in box]
    if any(v is None for v in numbers):
        return ()
    x1, y1, x2, y2 = numbers  # type: ignore[misc]
    if box_format == "qwen2.5":
        if image_size is None:
            raise ValueError("qwen2.5 boxes are in pixels: image_size=(height, width) is needed")
        height, width = image_size
        x1, x2 = x1 * QWEN_FRAME / width, x2 * QWEN_FRAME / width
        y1, y2 = y1 * QWEN_FRAME / height, y2 * QWEN_FRAME / height
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    clipped = [round(min(max(v, 0.0), QWEN_FRAME)) for v in (x1, y1, x2, y2)]
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return ()
    return tuple(clipped)  # type: ignore[return-value]


def _label(item: Mapping[str, Any]) -> str:
    for key in ("label", "name", "object", "category"):
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _box_of(item: Mapping[str, Any]) -> Any:
    for key in ("bbox_2d", "bbox", "box", "box_2d"):
        if key in item:
            return item[key]
    return None


def parse_grounding(
    text: str, *, box_format: str = "qwen3", image_size: tuple[int, int] | None = None
) -> list[GroundedObject]:
    """Every ``{label, bbox_2d}`` entry of a grounding reply, boxes in [0, 1000] (``()`` where unusable).

    Accepts a list of entries, a single entry, or an object holding the list under any key. Entries
    without a label are left out (there is nothing to track); malformed or empty replies give ``[]``.
    """
    value = extract_json(text)
    if isinstance(value, Mapping):
        lists = [v for v in value.values() if isinstance(v, list)]
        value = lists[0] if lists and not _label(value) else [value]
    if not isinstance(value, list):
        return []
    objects = []
    for item in value:
        if not isinstance(item, Mapping):
            continue
        label = _label(item)
        if not label:
            continue
        objects.append(
            GroundedObject(label, normalise_box(_box_of(item), box_format=box_format, image_size=image_size))
        )
    return objects


def match_labels(found: Sequence[GroundedObject], labels: Sequence[str]) -> list[GroundedObject]:
    """One entry per requested label, in order: the first found object with that label, else an empty box."""
    by_label: dict[str, GroundedObject] = {}
    for obj in found:
        by_label.setdefault(obj.label.strip().lower(), obj)
    out = []
    for label in labels:
        hit = by_label.get(label.strip().lower())
        out.append(GroundedObject(label, hit.bbox_2d if hit is not None else ()))
    return out


def parse_instruction(text: str) -> Instruction | None:
    """``{"prompt", "original_scene"}`` from a reply, or plain text of at least three words as the prompt.

    ``None`` when the reply holds neither (empty, a bare fragment, or JSON without a prompt).
    """
    value = extract_json(text)
    if isinstance(value, Mapping):
        prompt = value.get("prompt") or value.get("instruction")
        scene = value.get("original_scene") or value.get("scene") or ""
        if isinstance(prompt, str) and prompt.strip():
            return Instruction(prompt.strip(), scene.strip() if isinstance(scene, str) else "")
        return None
    if not isinstance(text, str):
        return None
    plain = re.sub(r"```(?:json)?", "", text).strip().strip('"').strip()
    # plain text is taken as the prompt only when it reads like one (a few words, no stray JSON)
    if value is None and len(re.findall(r"[^\W\d_]{2,}", plain)) >= 3:
        return Instruction(plain)
    return None


def parse_scene_choice(text: str, themes: Sequence[str]) -> SceneChoice | None:
    """The taxonomy scene a reply picked, checked against the allowed ``themes``; ``None`` when the
    reply names no scene of them (a made-up scene, a theme not allowed, or no JSON).

    Accepts ``{"theme", "subtheme", "scene"}`` or ``{"theme", "chosen_keyword": "subtheme: scene"}``
    (case and spacing aside) and an optional ``reason``.
    """
    value = extract_json(text)
    if not isinstance(value, Mapping):
        return None
    subtheme, scene = value.get("subtheme"), value.get("scene")
    keyword = value.get("chosen_keyword") or value.get("keyword")
    if (not isinstance(subtheme, str) or not isinstance(scene, str)) and isinstance(keyword, str):
        subtheme, _, scene = keyword.partition(":")
    resolved = taxonomy.resolve_choice(value.get("theme"), subtheme, scene, tuple(themes))
    if resolved is None:
        return None
    reason = value.get("reason", "")
    return SceneChoice(resolved[0], resolved[1], reason.strip() if isinstance(reason, str) else "")


def parse_camera(text: str) -> CameraJudgement | None:
    """``{"static": bool, "reason"}`` from a reply (JSON, or a leading yes/no); ``None`` if undecidable."""
    value = extract_json(text)
    if isinstance(value, Mapping) and "static" in value:
        static = value["static"]
        reason = value.get("reason", "")
        if isinstance(static, str):
            static = {"true": True, "yes": True, "false": False, "no": False}.get(static.strip().lower())
        if isinstance(static, bool):
            return CameraJudgement(static, reason if isinstance(reason, str) else "")
        return None
    if isinstance(text, str):
        first = re.match(r"\W*(yes|no|static|moving)\b", text.strip().lower())
        if first:
            return CameraJudgement(first.group(1) in ("yes", "static"), text.strip())
    return None


# --------------------------------------------------------------------------------------------------
# Prompts (written for this library)
# --------------------------------------------------------------------------------------------------
INSTRUCTION_PROMPT = (
    "This is the first frame of a video. Write an instruction for a video editor that replaces the "
    "background with this scene: {keyword} (theme: {theme}). The foreground (people, animals and objects "
    "in front of the background) must stay exactly as it is; say what in the new background moves and "
    "how, so the background is lively. Also describe the current scene in one sentence. Answer with JSON "
    'only: {{"original_scene": "...", "prompt": "..."}}'
)
CHOICE_PROMPT = (
    "This is the first frame of a video. Its background will be replaced by one of the scenes below, "
    "while the foreground (people, animals and objects in front of the background) stays as it is. Pick "
    "the one scene that suits this frame best: its subject, framing, light and mood. Each line is "
    "'theme / subtheme: scene; scene; ...'.\n{options}\n"
    "Answer with JSON only, copying the names exactly: "
    '{{"theme": "...", "subtheme": "...", "scene": "...", "reason": "..."}}'
)
GROUNDING_PROMPT = (
    "Find every foreground object in this image: people, animals and objects that stand in front of the "
    "background and should be kept when the background is replaced. Answer with a JSON list only, one "
    'entry per object: [{"label": "a short unique name", "bbox_2d": [x1, y1, x2, y2]}]'
)
RELOCATE_PROMPT = (
    "Find these objects in this image: {labels}. Answer with a JSON list only, one entry per object in "
    'the same order: [{{"label": "...", "bbox_2d": [x1, y1, x2, y2]}}]; use "bbox_2d": [] for an object '
    "that is not visible."
)
CAMERA_PROMPT = (
    "These images are frames of one video, in order. Is the camera completely static (no pan, tilt, "
    "zoom, rotation, shake or handheld drift)? Moving people or objects do not count. Answer with JSON "
    'only: {"static": true or false, "reason": "..."}'
)


# --------------------------------------------------------------------------------------------------
# Chat machinery shared with the EditScore scorer
# --------------------------------------------------------------------------------------------------
@dataclass
class ChatInputs:
    """Model inputs for one or more chats, and the size of each image as the model saw it."""

    tensors: dict[str, Any]
    image_sizes: list[list[tuple[int, int]]]


class QwenChat:
    """A Qwen-VL conditional-generation model, its tokenizer and image processor, answering chats.

    ``model`` is a stock ``Qwen3VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration``
    (or a peft wrapper of one); replies are decoded without special tokens.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        image_processor: Any,
        *,
        max_new_tokens: int = 1024,
        temperature: float = 0.0,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        config = getattr(model, "config", None)
        self.image_token_id = int(config.image_token_id)
        self.image_token = tokenizer.convert_ids_to_tokens(self.image_token_id)

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def prepare(
        self, chats: Sequence[tuple[Sequence[np.ndarray], str]], system: str | None = None
    ) -> ChatInputs:
        """Tokenise chats of ``(images, text)``: images first, then the text, one user turn each."""
        import torch

        texts, pixel_values, grids, sizes = [], [], [], []
        merge = int(self.image_processor.merge_size)
        patch = int(self.image_processor.patch_size)
        for images, text in chats:
            content = [{"type": "image"} for _ in images] + [{"type": "text", "text": text}]
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": content}
            ]
            rendered = self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            chat_sizes = []
            if images:
                processed = self.image_processor(
                    images=[to_pil(np.asarray(im)) for im in images], return_tensors="pt"
                )
                grid = processed["image_grid_thw"]
                pixel_values.append(processed["pixel_values"])
                grids.append(grid)
                pieces = rendered.split(self.image_token)
                if len(pieces) != len(images) + 1:
                    raise ValueError(
                        f"chat template rendered {len(pieces) - 1} image slots for {len(images)} images"
                    )
                expanded = pieces[0]
                for g, piece in zip(grid, pieces[1:], strict=True):
                    expanded += self.image_token * (int(g.prod()) // (merge * merge)) + piece
                    chat_sizes.append((int(g[1]) * patch, int(g[2]) * patch))
                rendered = expanded
            texts.append(rendered)
            sizes.append(chat_sizes)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left")
        tensors: dict[str, Any] = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        tensors["mm_token_type_ids"] = (enc["input_ids"] == self.image_token_id).to(torch.int32)
        if pixel_values:
            tensors["pixel_values"] = torch.cat(pixel_values)
            tensors["image_grid_thw"] = torch.cat(grids)
        return ChatInputs(tensors, sizes)

    def generate(
        self,
        chats: Sequence[tuple[Sequence[np.ndarray], str]],
        *,
        system: str | None = None,
        seed: int = 0,
        max_new_tokens: int | None = None,
    ) -> tuple[list[str], list[list[tuple[int, int]]]]:
        """One reply per chat (batched, left padding), and the sizes the model saw each image at."""
        import torch

        inputs = self.prepare(chats, system)
        device = self.device
        dtype = next(self.model.parameters()).dtype
        tensors = {k: v.to(device) for k, v in inputs.tensors.items()}
        if "pixel_values" in tensors:
            tensors["pixel_values"] = tensors["pixel_values"].to(dtype)
        sampling = self.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sampling}
        if sampling:
            kwargs["temperature"] = self.temperature
        torch.manual_seed(seed)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode():
            out = self.model.generate(
                **tensors, max_new_tokens=max_new_tokens or self.max_new_tokens, pad_token_id=pad, **kwargs
            )
        new = out[:, tensors["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True), inputs.image_sizes


def qwen_box_format(model: Any) -> str:
    """``qwen2.5`` for Qwen2.5-VL checkpoints (pixel boxes), ``qwen3`` otherwise ([0, 1000] boxes)."""
    model_type = getattr(getattr(model, "config", None), "model_type", "")
    return "qwen2.5" if model_type.startswith("qwen2") else "qwen3"


def load_qwen_chat(
    model_id: str,
    *,
    dtype: str,
    device: str | None,
    max_pixels: int | None,
    min_pixels: int | None,
    adapter_id: str | None = None,
    merge_adapter: bool = True,
    offload: bool = False,
    **chat: Any,
) -> QwenChat:
    """A checkpoint's model (any Qwen-VL generation class, via ``AutoModelForImageTextToText``), tokenizer
    and PIL image processor; ``adapter_id`` is a peft adapter applied on top (merged by default)."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    # offload: accelerate places the layers over the GPU(s) and spills the rest to CPU memory
    placement = {"device_map": "auto"} if offload else {}
    model = AutoModelForImageTextToText.from_pretrained(model_id, dtype=torch_dtype(dtype), **placement)
    if adapter_id:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_id)
        if merge_adapter:
            model = model.merge_and_unload()
    if not offload:
        model.to(resolve_device(device))
    sizes = {k: v for k, v in (("max_pixels", max_pixels), ("min_pixels", min_pixels)) if v is not None}
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_id, **sizes)
    return QwenChat(model, AutoTokenizer.from_pretrained(model_id), image_processor, **chat)


def pop_options(opts: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Take ``keys`` out of a backend's checked options: those present, as their own keyword set."""
    return {k: opts.pop(k) for k in keys if k in opts}


def qwen_chat_from_options(
    opts: Mapping[str, Any], default_model_id: str, sizes: Mapping[str, Any], **chat: Any
) -> QwenChat:
    """The checkpoint path of the Qwen-VL backends: :func:`load_qwen_chat` from a config entry's options
    (``model_id``, ``dtype`` default ``bfloat16``, ``device`` default ``auto``, ``offload``) and the
    per-image ``sizes`` (``max_pixels``/``min_pixels``)."""
    return load_qwen_chat(
        opts.get("model_id") or default_model_id,
        dtype=opts.get("dtype", "bfloat16"),
        device=opts.get("device", "auto"),
        max_pixels=sizes.get("max_pixels"),
        min_pixels=sizes.get("min_pixels"),
        offload=bool(opts.get("offload", False)),
        **chat,
    )


def tiny_qwen_chat(
    family: str = "qwen3",
    seed: int = 0,
    *,
    max_new_tokens: int = 16,
    temperature: float = 0.0,
    max_pixels: int | None = None,
    min_pixels: int | None = None,
) -> QwenChat:
    """Random-weight Qwen3-VL (``family="qwen3"``) or Qwen2.5-VL (``"qwen2.5"``) with the offline tokenizer."""
    import torch
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    torch.manual_seed(seed)
    tokenizer = tiny_chat_tokenizer()
    ids = {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in (
            "<|image_pad|>",
            "<|video_pad|>",
            "<|vision_start|>",
            "<|vision_end|>",
            "<|endoftext|>",
            "<|im_end|>",
        )
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 2048,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    special = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if family == "qwen3":
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        text.update(
            head_dim=16,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [4, 2, 2],
                "mrope_interleaved": True,
            },
        )
        vision = {
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 32,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        }
        model = Qwen3VLForConditionalGeneration(
            Qwen3VLConfig(text_config=text, vision_config=vision, **special)
        )
        processor = Qwen2VLImageProcessorPil(
            patch_size=16,
            merge_size=2,
            temporal_patch_size=2,
            image_mean=[0.5] * 3,
            image_std=[0.5] * 3,
            min_pixels=min_pixels or 32 * 32,
            max_pixels=max_pixels or 64 * 64,
        )
    elif family == "qwen2.5":
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        text.update(
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2]}
        )
        from ...models.tiny import TINY_QWEN25_VL_VISION

        vision = dict(TINY_QWEN25_VL_VISION)
        model = Qwen2_5_VLForConditionalGeneration(
            Qwen2_5_VLConfig(text_config=text, vision_config=vision, **special)
        )
        processor = Qwen2VLImageProcessorPil(
            min_pixels=min_pixels or 28 * 28 * 4, max_pixels=max_pixels or 56 * 56
        )
    else:
        raise ValueError(f"family must be 'qwen3' or 'qwen2.5', got {family!r}")
    return QwenChat(model, tokenizer, processor, max_new_tokens=max_new_tokens, temperature=temperature)


# --------------------------------------------------------------------------------------------------
# The VLM role
# --------------------------------------------------------------------------------------------------
class QwenVLM:
    """Qwen3-VL (default ``Qwen/Qwen3-VL-32B-Instruct``) or Qwen2.5-VL as the pipeline's VLM.

    Options: ``model_id``, ``dtype``, ``device``, ``offload`` (accelerate's ``device_map="auto"``: layers
    that do not fit on the GPU wait in CPU memory), ``tiny``, ``seed`` (weights of ``tiny``), ``family``
    (``tiny`` only: ``qwen3`` or ``qwen2.5``), ``max_new_tokens``, ``temperature`` (0 = greedy),
    ``max_pixels``/``min_pixels`` (per-image budget), ``camera_frames`` (frames shown for the camera check)
    and ``relocate_batch`` (frames per batched generate in round 2).
    """

    resources: ClassVar[Resources] = Resources(num_gpus=1.0, num_cpus=2.0, gpu_memory_gb=80.0)
    option_keys: ClassVar[tuple[str, ...]] = (
        "model_id",
        "dtype",
        "device",
        "offload",
        "tiny",
        "seed",
        "family",
        "max_new_tokens",
        "temperature",
        "max_pixels",
        "min_pixels",
        "camera_frames",
        "relocate_batch",
    )
    default_model_id: ClassVar[str] = "Qwen/Qwen3-VL-32B-Instruct"

    def __init__(self, chat: QwenChat, *, camera_frames: int = 8, relocate_batch: int = 4) -> None:
        self.chat = chat
        self.box_format = qwen_box_format(chat.model)
        self.camera_frames = int(camera_frames)
        self.relocate_batch = max(1, int(relocate_batch))

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> QwenVLM:
        opts = check_options(cls.__name__, options, cls.option_keys)
        role = pop_options(opts, ("camera_frames", "relocate_batch"))
        chat_opts = pop_options(opts, ("max_new_tokens", "temperature"))
        sizes = pop_options(opts, ("max_pixels", "min_pixels"))
        if opts.pop("tiny", False):
            opts.pop("offload", None)  # a tiny model fits anywhere
            return cls.tiny(
                opts.pop("family", "qwen3"),
                int(opts.pop("seed", 0)),
                dtype=opts.get("dtype", "float32"),
                device=opts.get("device", "cpu"),
                **role,
                **chat_opts,
                **sizes,
            )
        if "family" in opts:
            raise ValueError("option 'family' only applies to tiny models; a checkpoint names its own family")
        return cls(qwen_chat_from_options(opts, cls.default_model_id, sizes, **chat_opts), **role)

    @classmethod
    def tiny(
        cls,
        family: str = "qwen3",
        seed: int = 0,
        *,
        dtype: str = "float32",
        device: str | None = "cpu",
        camera_frames: int = 8,
        relocate_batch: int = 4,
        **chat_opts: Any,
    ) -> QwenVLM:
        """Random-weight Qwen3-VL (or Qwen2.5-VL) with the offline tokenizer: replies are arbitrary text."""
        chat = tiny_qwen_chat(family, seed, **chat_opts)
        if dtype != "float32" or resolve_device(device) != "cpu":
            chat.model.to(resolve_device(device), torch_dtype(dtype))
        return cls(chat, camera_frames=camera_frames, relocate_batch=relocate_batch)

    def _reply(
        self, images: Sequence[np.ndarray], text: str, seed: int = 0
    ) -> tuple[str, list[tuple[int, int]]]:
        replies, sizes = self.chat.generate([(images, text)], seed=seed)
        return replies[0], sizes[0]

    def choose_scene(self, frame0: np.ndarray, themes: Sequence[str], *, seed: int = 0) -> SceneChoice:
        """The scene for this first frame, a constrained choice from the taxonomy of ``themes``."""
        themes = taxonomy.check_themes(themes)
        reply, _ = self._reply([frame0], CHOICE_PROMPT.format(options=taxonomy.options_text(themes)), seed)
        choice = parse_scene_choice(reply, themes)
        if choice is None:
            raise SparkleDataError(
                f"the VLM chose no scene of the taxonomy ({', '.join(themes)}): {reply[:200]!r}"
            )
        return choice

    def compose_instruction(
        self, frame0: np.ndarray, theme: str, chosen_keyword: str, *, seed: int = 0
    ) -> Instruction:
        reply, _ = self._reply([frame0], INSTRUCTION_PROMPT.format(keyword=chosen_keyword, theme=theme), seed)
        instruction = parse_instruction(reply)
        if instruction is None:
            raise SparkleDataError(f"the VLM wrote no usable instruction: {reply[:200]!r}")
        return instruction

    def ground(self, frame: np.ndarray) -> list[GroundedObject]:
        reply, sizes = self._reply([frame], GROUNDING_PROMPT)
        objects = parse_grounding(reply, box_format=self.box_format, image_size=sizes[0])
        usable = [o for o in objects if o.bbox_2d]
        if len(usable) < len(objects):
            logger.warning(
                "grounding: %d of %d objects had no usable box and were left out",
                len(objects) - len(usable),
                len(objects),
            )
        return usable

    def relocate(self, frames: Sequence[np.ndarray], labels: Sequence[str]) -> list[list[GroundedObject]]:
        if not labels:
            return [[] for _ in frames]
        text = RELOCATE_PROMPT.format(labels=", ".join(labels))
        out: list[list[GroundedObject]] = []
        for start in range(0, len(frames), self.relocate_batch):
            batch = frames[start : start + self.relocate_batch]
            replies, sizes = self.chat.generate([([f], text) for f in batch])
            for reply, size in zip(replies, sizes, strict=True):
                found = parse_grounding(reply, box_format=self.box_format, image_size=size[0])
                out.append(match_labels(found, labels))
        return out

    def judge_static_camera(self, frames: Sequence[np.ndarray]) -> CameraJudgement:
        if len(frames) == 0:
            raise ValueError("the camera check needs at least one frame")
        picks = np.unique(
            np.round(np.linspace(0, len(frames) - 1, min(self.camera_frames, len(frames)))).astype(int)
        )
        reply, _ = self._reply([frames[i] for i in picks], CAMERA_PROMPT)
        judgement = parse_camera(reply)
        if judgement is None:
            raise SparkleDataError(f"the VLM gave no camera judgement: {reply[:200]!r}")
        return judgement
