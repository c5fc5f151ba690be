"""EditScore as its own code does it: the two questions, the 25-point range, the reductions, the
range/2 fallback and the average over passes; and the reference scorer on the same scale."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from sparkle_video.generation.backends.editscore import (
    SCORE_RANGE,
    EditScoreScorer,
    average_passes,
    editscore_from_scores,
    fallback_scores,
    pq_prompt,
    read_scores,
    sc_prompt,
)
from sparkle_video.generation.backends.protocols import EditScore
from sparkle_video.generation.backends.reference import ReferenceScorer


class ScriptedChat:
    """Stands in for QwenChat: replies from a script, and remembers what it was asked."""

    def __init__(self, replies: list[list[str]]):
        self.replies = list(replies)
        self.calls: list[tuple[int, list[tuple[int, str]]]] = []
        self.model = SimpleNamespace(config=SimpleNamespace(model_type="qwen2_5_vl"))

    def generate(self, chats, *, seed=0, **kw):
        self.calls.append((seed, [(len(images), text) for images, text in chats]))
        batch = self.replies.pop(0)
        return batch, [[] for _ in chats]


def test_prompts_have_editscore_parts_and_range_25() -> None:
    sc = sc_prompt("make it snow")
    pq = pq_prompt()
    assert SCORE_RANGE == 25
    # SC: context + two-image rule + SC rule with the instruction; PQ: context + PQ rule, no instruction
    assert sc.startswith(pq.split("RULES:")[0]) and pq.startswith(sc.split("RULES:")[0])
    assert "Two images are given" in sc and "Two images" not in pq
    assert "Editing instruction: make it snow" in sc and "make it snow" not in pq
    assert "from 0 to 25" in sc and "from 0 to 25" in pq
    assert "0 to 10" not in sc + pq and "{" + "range}" not in sc + pq
    assert "editing success" in sc and "over-editing" in sc
    assert "naturalness" in pq and "artefacts" in pq
    assert '{"score": [...], "reasoning": "..."}' in sc
    assert sc_prompt("x", 10).count("0 to 10") == 1


def test_reductions_sc_pq_and_overall() -> None:
    record = editscore_from_scores([20.0, 12.5], [25.0, 15.0], "sc why", "pq why")
    assert record.prompt_following == 8.0 and record.consistency == 5.0
    assert record.perceptual_quality == 6.0  # min(PQ) / 2.5
    assert math.isclose(record.overall, math.sqrt(5.0 * 6.0))  # SC = min(SC) / 2.5 = 5
    assert (record.SC_reasoning, record.PQ_reasoning) == ("sc why", "pq why")


@pytest.mark.parametrize(
    "reply", ["", "no json here", '{"score": [26, 3]}', '{"score": [-0.5, 3]}', '{"score": [5]}']
)
def test_unusable_or_out_of_range_reply_counts_as_half_the_range(reply: str) -> None:
    scores, why = read_scores(reply)
    assert scores == [12.5, 12.5] == fallback_scores()
    assert why == "unusable reply, counted as 12.5"
    assert read_scores('{"score": [25, 0], "reasoning": "ok"}') == ([25.0, 0.0], "ok")


def test_scorer_falls_back_without_retrying_and_averages_passes() -> None:
    chat = ScriptedChat(
        [
            ['{"score": [25, 20], "reasoning": "a"}', "garbage"],  # pass 1: PQ unusable -> 12.5, 12.5
            ['{"score": [15, 25], "reasoning": "b"}', '{"score": [25, 25]}'],  # pass 2
        ]
    )
    scorer = EditScoreScorer(chat, seed=42, num_pass=2)
    src, edited = np.zeros((8, 8, 3), np.uint8), np.full((8, 8, 3), 9, np.uint8)
    record = scorer.score(src, edited, "make it snow")
    assert [seed for seed, _ in chat.calls] == [42, 43]  # one reply per question per pass
    assert [n for n, _ in chat.calls[0][1]] == [2, 1]  # SC sees source + edit, PQ the edit alone
    pass1 = editscore_from_scores([25, 20], [12.5, 12.5], "a")
    pass2 = editscore_from_scores([15, 25], [25, 25], "b")
    assert pass1.overall == math.sqrt(8.0 * 5.0) and pass2.overall == math.sqrt(6.0 * 10.0)
    assert record == EditScore(
        prompt_following=(10.0 + 6.0) / 2,
        consistency=(8.0 + 10.0) / 2,
        perceptual_quality=(5.0 + 10.0) / 2,
        overall=(pass1.overall + pass2.overall) / 2,
        SC_reasoning="a",
        PQ_reasoning="unusable reply, counted as 12.5",
    )
    assert average_passes([pass1]) is pass1
    with pytest.raises(ValueError, match="at least one pass"):
        average_passes([])


def test_max_attempts_asks_again_before_falling_back() -> None:
    chat = ScriptedChat([["bad", '{"score": [25, 25]}'], ["still bad"]])
    record = EditScoreScorer(chat, seed=7, max_attempts=2).score(
        np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8), "x"
    )
    assert [seed for seed, _ in chat.calls] == [7, 8] and [len(c) for _, c in chat.calls] == [2, 1]
    assert (record.prompt_following, record.consistency, record.perceptual_quality) == (5.0, 5.0, 10.0)
    assert math.isclose(record.overall, math.sqrt(5.0 * 10.0))


def test_reference_scorer_reports_on_the_same_scale() -> None:
    rng = np.random.default_rng(0)
    src = rng.integers(0, 255, (72, 128, 3), dtype=np.uint8)
    edited = src.copy()
    edited[:, :40] = rng.integers(0, 255, (72, 40, 3), dtype=np.uint8)
    record = ReferenceScorer().score(src, edited, "Replace the background with a beach")
    sc = min(record.prompt_following, record.consistency)
    assert math.isclose(record.overall, math.sqrt(sc * record.perceptual_quality), abs_tol=2e-3)
    assert set(vars(record)) == set(vars(editscore_from_scores([1, 1], [1, 1])))
    unchanged = ReferenceScorer().score(src, src, "Replace the background with a beach")
    assert unchanged.prompt_following == 0.0 and unchanged.overall == 0.0


def test_editscore_judges_the_pictures_alone_as_upstream() -> None:
    """Stages 3 and 5 hand a mask only to scorers that ask for one; EditScore, the paper's scorer, asks
    for none, so it sees exactly what upstream's does (the reference scorer opts in)."""
    from sparkle_video.generation.backends.editscore import EditScoreScorer

    for extra in ("score_erase", "score_replacement"):
        assert not hasattr(EditScoreScorer, extra)
        assert hasattr(ReferenceScorer, extra)
