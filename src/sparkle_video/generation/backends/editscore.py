"""Edit-scorer role: EditScore, a LoRA on Qwen2.5-VL-7B that answers in text, loaded with peft.

EditScore asks its VLM two questions, each built from parts: a context (who the judge is and the JSON
reply ``{"score": [...], "reasoning": ...}``), then for semantic consistency (SC) a rule saying two
images follow (source, then edited) plus the SC rule (how well the instruction was carried out, and how
little else was changed), and for perceptual quality (PQ) the PQ rule alone on the edited image
(naturalness, and freedom from artefacts). The rules are VIEScore's 0-10 rubric with the score range 25
put in its place. Reductions, as EditScore's own scorer: ``SC = min(SC scores) / 2.5``,
``PQ = min(PQ scores) / 2.5``, ``O = sqrt(SC * PQ)``; a reply that cannot be parsed, or holds a score
outside ``[0, 25]``, counts as ``25 / 2`` for each of its scores; with several passes the three numbers
are averaged over the passes. The wording of the rules is this library's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from .model_support import check_options, resolve_device, torch_dtype
from .protocols import EditScore, Resources
from .qwen_vl import QwenChat, extract_json, pop_options, qwen_chat_from_options, tiny_qwen_chat

#: EditScore's reply scale (its ``score_range``); scores are mapped to 0-10 by dividing by 2.5.
SCORE_RANGE = 25

#: Shared opening of both questions: the judge's role and the reply format.
CONTEXT = (
    "You are an expert digital artist judging AI-generated pictures by the rules below. Every input image "
    "is AI-generated, people in them included, so there is no privacy concern.\n"
    "Reply in JSON exactly like this, keeping the reasoning short:\n"
    '{{"score": [...], "reasoning": "..."}}\n'
)
#: SC only: what the two images are.
TWO_IMAGE_RULE = (
    "RULES:\nTwo images are given: the first is the original AI-generated image, the second is that image "
    "after an edit that follows an editing instruction. Judge how well the second image carries out the "
    "instruction. The two may look the same when the edit failed.\n"
)
#: SC only: the two scores asked for.
SC_RULE = (
    "Give two scores from 0 to {range}.\n"
    "The first score is editing success: 0 means the scene in the edited image does not follow the "
    "instruction at all, {range} means it follows it perfectly.\n"
    "The second score is over-editing: 0 means the edited image is a different picture from the original, "
    "{range} means nothing but what the instruction asks for was changed.\n"
    "Put the editing success score first and the over-editing score second.\n"
    "Editing instruction: {instruction}\n"
)
#: PQ only: the two scores asked for, on the edited image alone.
PQ_RULE = (
    "RULES:\nThe image is AI-generated. Judge how well it was made.\n"
    "Give two scores from 0 to {range}.\n"
    "The first score is naturalness: 0 means the scene does not look natural at all (wrong sense of "
    "distance, shadows or lighting), {range} means it looks entirely natural.\n"
    "The second score is artefacts: 0 means the image is full of artefacts (distortion, blur, noise, "
    "broken or unusual body parts, odd limbs, extra fingers), {range} means it has none.\n"
    "Put the naturalness score first and the artefacts score second.\n"
)


def sc_prompt(instruction: str, score_range: int = SCORE_RANGE) -> str:
    """The semantic-consistency question: context, the two-image rule and the SC rule."""
    return (CONTEXT + TWO_IMAGE_RULE + SC_RULE).format(range=score_range, instruction=instruction)


def pq_prompt(score_range: int = SCORE_RANGE) -> str:
    """The perceptual-quality question: context and the PQ rule."""
    return (CONTEXT + PQ_RULE).format(range=score_range)


def parse_score_reply(
    text: str, *, expected: int = 2, score_range: int = SCORE_RANGE
) -> tuple[list[float], str] | None:
    """``(scores, reasoning)`` from an EditScore reply, or ``None`` when it does not follow the format.

    The reply must hold a JSON object with a ``score`` list of ``expected`` numbers in
    ``[0, score_range]`` (a single number is accepted when one is expected); ``reasoning`` may be missing.
    """
    value = extract_json(text)
    if not isinstance(value, Mapping):
        return None
    scores = value.get("score", value.get("scores"))
    if isinstance(scores, (int, float)) and not isinstance(scores, bool):
        scores = [scores]
    if not isinstance(scores, list) or len(scores) != expected:
        return None
    numbers = []
    for s in scores:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            return None
        if not 0 <= s <= score_range:
            return None
        numbers.append(float(s))
    reasoning = value.get("reasoning", "")
    return numbers, reasoning if isinstance(reasoning, str) else ""


def fallback_scores(expected: int = 2, score_range: int = SCORE_RANGE) -> list[float]:
    """What an unusable reply counts as: the middle of the range for every score, as EditScore does."""
    return [score_range / 2] * expected


def read_scores(text: str, *, expected: int = 2, score_range: int = SCORE_RANGE) -> tuple[list[float], str]:
    """Scores and reasoning of one reply, the range/2 fallback standing in for an unusable one."""
    parsed = parse_score_reply(text, expected=expected, score_range=score_range)
    if parsed is None:
        return fallback_scores(expected, score_range), f"unusable reply, counted as {score_range / 2:g}"
    return parsed


def editscore_from_scores(
    sc: Sequence[float],
    pq: Sequence[float],
    sc_reasoning: str = "",
    pq_reasoning: str = "",
    score_range: int = SCORE_RANGE,
) -> EditScore:
    """EditScore's published record from one pass's raw SC and PQ scores (``score_range`` scale).

    ``prompt_following`` and ``consistency`` are the two SC scores, ``perceptual_quality`` is
    ``PQ = min(PQ scores)``, ``overall = sqrt(SC * PQ)`` with ``SC = min(SC scores)``, all on 0-10.
    """
    scale = score_range / 10
    sc_score = min(sc) / scale
    pq_score = min(pq) / scale
    return EditScore(
        prompt_following=sc[0] / scale,
        consistency=sc[-1] / scale,
        perceptual_quality=pq_score,
        overall=math.sqrt(sc_score * pq_score),
        SC_reasoning=sc_reasoning,
        PQ_reasoning=pq_reasoning,
    )


def average_passes(passes: Sequence[EditScore]) -> EditScore:
    """The mean of several passes' records, field by field (reasonings of the first pass)."""
    if not passes:
        raise ValueError("at least one pass is needed")
    if len(passes) == 1:
        return passes[0]

    def mean(name: str) -> float:
        return float(np.mean([getattr(p, name) for p in passes]))

    return EditScore(
        prompt_following=mean("prompt_following"),
        consistency=mean("consistency"),
        perceptual_quality=mean("perceptual_quality"),
        overall=mean("overall"),
        SC_reasoning=passes[0].SC_reasoning,
        PQ_reasoning=passes[0].PQ_reasoning,
    )


class EditScoreScorer:
    """EditScore-7B (Qwen2.5-VL-7B-Instruct + the ``EditScore/EditScore-7B`` LoRA) as the edit scorer.

    Options: ``model_id`` (base, default ``Qwen/Qwen2.5-VL-7B-Instruct``), ``adapter_id`` (peft adapter,
    default ``EditScore/EditScore-7B``; ``null`` scores with the base model), ``merge_adapter``, ``dtype``,
    ``device``, ``offload`` (as the VLM's), ``tiny``, ``seed`` (sampling seed; weights seed of ``tiny``), ``temperature`` (0.7 and seed
    42 as EditScore's defaults), ``max_new_tokens``, ``max_pixels``/``min_pixels``, ``num_pass`` (passes averaged, 1 as
    EditScore's default) and ``max_attempts`` (1 as EditScore: a reply off the format counts as range/2
    at once; more asks again with the next seed before falling back).
    """

    resources: ClassVar[Resources] = Resources(num_gpus=1.0, num_cpus=2.0, gpu_memory_gb=24.0)
    option_keys: ClassVar[tuple[str, ...]] = (
        "model_id",
        "adapter_id",
        "merge_adapter",
        "dtype",
        "device",
        "offload",
        "tiny",
        "seed",
        "temperature",
        "max_new_tokens",
        "max_pixels",
        "min_pixels",
        "max_attempts",
        "num_pass",
    )
    default_model_id: ClassVar[str] = "Qwen/Qwen2.5-VL-7B-Instruct"
    default_adapter_id: ClassVar[str] = "EditScore/EditScore-7B"

    def __init__(
        self,
        chat: QwenChat,
        *,
        seed: int = 42,
        max_attempts: int = 1,
        num_pass: int = 1,
        score_range: int = SCORE_RANGE,
    ) -> None:
        self.chat = chat
        self.num_pass = max(1, int(num_pass))
        self.seed = int(seed)
        self.max_attempts = max(1, int(max_attempts))
        self.score_range = int(score_range)

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> EditScoreScorer:
        opts = check_options(cls.__name__, options, cls.option_keys)
        role = pop_options(opts, ("max_attempts", "num_pass"))
        chat_opts = pop_options(opts, ("max_new_tokens", "temperature"))
        sizes = pop_options(opts, ("max_pixels", "min_pixels"))
        seed = int(opts.pop("seed", 42))
        if opts.pop("tiny", False):
            return cls.tiny(
                seed,
                adapter_id=opts.get("adapter_id"),
                merge_adapter=opts.get("merge_adapter", True),
                dtype=opts.get("dtype", "float32"),
                device=opts.get("device", "cpu"),
                **role,
                **chat_opts,
                **sizes,
            )
        chat_opts.setdefault("temperature", 0.7)
        chat_opts.setdefault("max_new_tokens", 512)
        chat = qwen_chat_from_options(
            opts,
            cls.default_model_id,
            sizes,
            adapter_id=opts.get("adapter_id", cls.default_adapter_id),
            merge_adapter=opts.get("merge_adapter", True),
            **chat_opts,
        )
        return cls(chat, seed=seed, **role)

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        *,
        adapter_id: str | None = None,
        merge_adapter: bool = True,
        dtype: str = "float32",
        device: str | None = "cpu",
        max_attempts: int = 1,
        num_pass: int = 1,
        **chat_opts: Any,
    ) -> EditScoreScorer:
        """A random-weight Qwen2.5-VL, optionally with a peft adapter from ``adapter_id`` (a folder)."""
        chat = tiny_qwen_chat("qwen2.5", seed, **chat_opts)
        if adapter_id:
            from peft import PeftModel

            model = PeftModel.from_pretrained(chat.model, adapter_id)
            chat.model = (model.merge_and_unload() if merge_adapter else model).eval()
        chat.model.to(resolve_device(device), torch_dtype(dtype))
        return cls(chat, seed=seed, max_attempts=max_attempts, num_pass=num_pass)

    def _ask(self, chats: list[tuple[Sequence[np.ndarray], str]], seed: int) -> list[tuple[list[float], str]]:
        """Scores of each chat's reply; one off the format is asked again (next seed) up to
        ``max_attempts`` times, then counts as range/2 (EditScore's fallback), so a run never stops here."""
        results: list[tuple[list[float], str] | None] = [None] * len(chats)
        for attempt in range(self.max_attempts):
            todo = [i for i, r in enumerate(results) if r is None]
            if not todo:
                break
            replies, _ = self.chat.generate([chats[i] for i in todo], seed=seed + attempt)
            for i, reply in zip(todo, replies, strict=True):
                results[i] = parse_score_reply(reply, score_range=self.score_range)
        fallback = (
            fallback_scores(2, self.score_range),
            f"unusable reply, counted as {self.score_range / 2:g}",
        )
        return [r if r is not None else fallback for r in results]

    def score(self, source: np.ndarray, edited: np.ndarray, prompt: str) -> EditScore:
        """EditScore of ``edited`` against ``source`` for ``prompt`` (0-10 scale), averaged over passes."""
        chats = [
            ([source, edited], sc_prompt(prompt, self.score_range)),
            ([edited], pq_prompt(self.score_range)),
        ]
        passes = []
        for n in range(self.num_pass):
            (sc, sc_reason), (pq, pq_reason) = self._ask(chats, self.seed + n * self.max_attempts)
            passes.append(editscore_from_scores(sc, pq, sc_reason, pq_reason, self.score_range))
        return average_passes(passes)
