"""Edit-scorer role: EditScore, a LoRA on Qwen2.5-VL-7B that answers in text, loaded with peft.

EditScore asks its VLM two questions and reads a JSON reply ``{"reasoning": ..., "score": [...]}`` on a
0-25 scale for each: semantic consistency (source + edited image + instruction: scores for prompt
following and for keeping what should not change) and perceptual quality (edited image alone: scores
for naturalness and artefacts). The published schema is derived as EditScore does it: every score is
divided by 2.5 to the 0-10 scale; ``prompt_following`` and ``consistency`` are the two SC scores,
``perceptual_quality`` is the smaller PQ score, and ``overall = sqrt(min(SC) * PQ)``.
The prompts are this library's own wording of that rubric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ...errors import SparkleDataError
from .model_support import check_options, resolve_device, torch_dtype
from .protocols import EditScore, Resources
from .qwen_vl import QwenChat, extract_json, pop_options, qwen_chat_from_options, tiny_qwen_chat

#: EditScore's reply scale (its ``score_range``); scores are mapped to 0-10 by dividing by 2.5.
SCORE_RANGE = 25

SC_PROMPT = (
    "You are judging an image edit. The first image is the source, the second is the edited result, and "
    "the editing instruction is: {instruction}\n"
    "Give two scores from 0 to {range}: the first for how well the edit follows the instruction, the second "
    "for how well everything the instruction does not ask to change is kept unchanged. Reason briefly "
    'first. Answer with JSON only: {{"reasoning": "...", "score": [following, consistency]}}'
)
PQ_PROMPT = (
    "You are judging the quality of an edited image. Give two scores from 0 to {range}: the first for how "
    "natural the image looks (lighting, shadows, perspective, harmony), the second for how free it is of "
    "artefacts (distortion, blur, seams, broken parts). Reason briefly first. Answer with JSON only: "
    '{{"reasoning": "...", "score": [naturalness, artefacts]}}'
)


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


def editscore_from_scores(
    sc: Sequence[float],
    pq: Sequence[float],
    sc_reasoning: str = "",
    pq_reasoning: str = "",
    score_range: int = SCORE_RANGE,
) -> EditScore:
    """EditScore's published record from the raw SC and PQ scores (``score_range`` scale)."""
    scale = score_range / 10
    sc_score = min(sc) / scale
    pq_score = min(pq) / scale
    return EditScore(
        prompt_following=sc[0] / scale,
        consistency=sc[1] / scale,
        perceptual_quality=pq_score,
        overall=math.sqrt(sc_score * pq_score),
        SC_reasoning=sc_reasoning,
        PQ_reasoning=pq_reasoning,
    )


class EditScoreScorer:
    """EditScore-7B (Qwen2.5-VL-7B-Instruct + the ``EditScore/EditScore-7B`` LoRA) as the edit scorer.

    Options: ``model_id`` (base, default ``Qwen/Qwen2.5-VL-7B-Instruct``), ``adapter_id`` (peft adapter,
    default ``EditScore/EditScore-7B``; ``null`` scores with the base model), ``merge_adapter``, ``dtype``,
    ``device``, ``offload`` (as the VLM's), ``tiny``, ``seed`` (sampling seed; weights seed of ``tiny``), ``temperature`` (0.7 and seed
    42 as EditScore's defaults), ``max_new_tokens``, ``max_pixels``/``min_pixels`` and ``max_attempts``
    (replies off the format are asked again, with the next seed).
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
    )
    default_model_id: ClassVar[str] = "Qwen/Qwen2.5-VL-7B-Instruct"
    default_adapter_id: ClassVar[str] = "EditScore/EditScore-7B"

    def __init__(
        self, chat: QwenChat, *, seed: int = 42, max_attempts: int = 3, score_range: int = SCORE_RANGE
    ) -> None:
        self.chat = chat
        self.seed = int(seed)
        self.max_attempts = max(1, int(max_attempts))
        self.score_range = int(score_range)

    @classmethod
    def from_config(cls, options: Mapping[str, Any]) -> EditScoreScorer:
        opts = check_options(cls.__name__, options, cls.option_keys)
        role = pop_options(opts, ("max_attempts",))
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
        **chat_opts: Any,
    ) -> EditScoreScorer:
        """A random-weight Qwen2.5-VL, optionally with a peft adapter from ``adapter_id`` (a folder)."""
        chat = tiny_qwen_chat("qwen2.5", seed, **chat_opts)
        if adapter_id:
            from peft import PeftModel

            model = PeftModel.from_pretrained(chat.model, adapter_id)
            chat.model = (model.merge_and_unload() if merge_adapter else model).eval()
        chat.model.to(resolve_device(device), torch_dtype(dtype))
        return cls(chat, seed=seed, max_attempts=max_attempts)

    def _ask(self, chats: list[tuple[Sequence[np.ndarray], str]]) -> list[tuple[list[float], str]]:
        """Replies to ``chats`` in the score format, asking again (next seed) for the ones off format."""
        results: list[tuple[list[float], str] | None] = [None] * len(chats)
        last: list[str] = [""] * len(chats)
        for attempt in range(self.max_attempts):
            todo = [i for i, r in enumerate(results) if r is None]
            if not todo:
                break
            replies, _ = self.chat.generate([chats[i] for i in todo], seed=self.seed + attempt)
            for i, reply in zip(todo, replies, strict=True):
                last[i] = reply
                results[i] = parse_score_reply(reply, score_range=self.score_range)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            raise SparkleDataError(
                f"the scorer's reply is not in the score format after {self.max_attempts} attempt(s): "
                f"{last[missing[0]][:200]!r}"
            )
        return results  # type: ignore[return-value]

    def score(self, source: np.ndarray, edited: np.ndarray, prompt: str) -> EditScore:
        """EditScore of ``edited`` against ``source`` for ``prompt`` (0-10 scale)."""
        sc_text = SC_PROMPT.format(instruction=prompt, range=self.score_range)
        pq_text = PQ_PROMPT.format(range=self.score_range)
        (sc, sc_reason), (pq, pq_reason) = self._ask([([source, edited], sc_text), ([edited], pq_text)])
        return editscore_from_scores(sc, pq, sc_reason, pq_reason, self.score_range)
