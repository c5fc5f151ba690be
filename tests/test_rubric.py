"""The judge protocols without a server: the pinned rubric texts, prompt building, both reply-parsing
rules down to their error messages, and the cap."""

from __future__ import annotations

import hashlib
import re

import pytest
from bench_fixtures import OPENVE_NAMES, SPARKLE_NAMES

from sparkle_video.bench.rubric import (
    OPENVE,
    OPENVE_RUBRIC,
    PARSE_MODES,
    PROTOCOLS,
    SCORE_MAX,
    SCORE_MIN,
    SPARKLE,
    SPARKLE_RUBRIC,
    ReplyError,
    apply_cap,
    get_protocol,
    parse_scores,
    parse_scores_official,
    rubric_sha256,
)

#: The rubric decides the scores: a change to the built-in wording must be deliberate, and shows here.
SPARKLE_RUBRIC_SHA256 = "97e713d83e9403570cc7070c2016277c1b47418e6416a6c39229938a903f0174"
OPENVE_RUBRIC_SHA256 = "a0a7df2113c18aca7042e4b7882e6256b17df4e95958435b888d03b9c61bfe79"


def official_reply(scores: list[int], names: tuple[str, ...] = SPARKLE.dimensions) -> str:
    return "Brief reasoning: fine.\n" + "\n".join(f"{n}: {s}" for n, s in zip(names, scores, strict=True))


# -- protocols and rubric text -------------------------------------------------------------------------
def test_builtin_rubrics_are_pinned_by_hash() -> None:
    assert rubric_sha256(SPARKLE_RUBRIC) == SPARKLE_RUBRIC_SHA256
    assert rubric_sha256(OPENVE_RUBRIC) == OPENVE_RUBRIC_SHA256
    assert SPARKLE.rubric is SPARKLE_RUBRIC and OPENVE.rubric is OPENVE_RUBRIC
    # the hash is SHA-256 of the UTF-8 bytes
    assert rubric_sha256("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert rubric_sha256("\u00e9") == hashlib.sha256(b"\xc3\xa9").hexdigest()


def test_protocols_name_their_dimensions_in_stored_order() -> None:
    assert PROTOCOLS == {"sparkle": SPARKLE, "openve": OPENVE}
    assert get_protocol("sparkle") is SPARKLE and get_protocol("openve") is OPENVE
    with pytest.raises(ValueError, match=r"^unknown protocol 'vbench'; known: \['openve', 'sparkle'\]$"):
        get_protocol("vbench")
    assert SPARKLE.dimensions == SPARKLE_NAMES  # the official stored order
    assert SPARKLE.short_names == ("Ins", "Vis", "FgIn", "FgMo", "BgDy", "BgVi")
    assert (SPARKLE.cap, SPARKLE.strip_lines) == (True, True)
    assert OPENVE.dimensions == OPENVE_NAMES
    assert OPENVE.short_names == ("Ins", "VQ", "Cons")
    assert (OPENVE.cap, OPENVE.strip_lines) == (False, False)
    assert (SCORE_MIN, SCORE_MAX) == (1, 5) and PARSE_MODES == ("official", "lenient")


def test_builtin_rubric_asks_for_every_dimension_line_in_order() -> None:
    for proto in (SPARKLE, OPENVE):
        tail = proto.rubric.rsplit("nothing else:\n", 1)[1]
        wanted = "\n".join(f"{d}: <1-5>" for d in proto.dimensions)
        assert tail == f"{wanted}\n\nEditing instruction: {{instruction}}\n"


def test_build_prompt_placeholders_and_appending() -> None:
    assert SPARKLE.build_prompt("make it snow") == SPARKLE_RUBRIC.replace("{instruction}", "make it snow")
    assert OPENVE.build_prompt("go") == OPENVE_RUBRIC.replace("{instruction}", "go")
    # every occurrence of the first placeholder found; {edit_prompt} is looked for first
    assert (
        SPARKLE.build_prompt("X", "{edit_prompt} / {edit_prompt} / {instruction}") == "X / X / {instruction}"
    )
    assert SPARKLE.build_prompt("X", "a {instruction} b {instruction}") == "a X b X"
    # without a placeholder: trailing blanks dropped, the instruction appended on its own paragraph
    assert SPARKLE.build_prompt("X", "Rate it.  \n\n") == "Rate it.\n\nEditing instruction: X\n"


def test_parse_dispatches_on_mode_and_caps_only_when_the_protocol_does() -> None:
    reply = official_reply([2, 5, 4, 1, 3, 5])
    assert SPARKLE.parse(reply) == SPARKLE.parse(reply, "official") == [2, 2, 2, 1, 2, 2]
    assert SPARKLE.parse(reply, "lenient") == [2, 2, 2, 1, 2, 2]
    assert OPENVE.parse(official_reply([2, 5, 4], OPENVE.dimensions)) == [2, 5, 4]
    # each protocol's own line rule: Sparkle-Bench strips lines, OpenVE-Bench does not
    indented = "\n".join(f"  {line}" for line in official_reply([2, 5, 4, 1, 3, 5]).splitlines())
    assert SPARKLE.parse(indented) == [2, 2, 2, 1, 2, 2]
    indented = "\n".join(f"  {line}" for line in official_reply([2, 5, 4], OPENVE.dimensions).splitlines())
    with pytest.raises(ReplyError, match="lacks scores"):
        OPENVE.parse(indented)
    with pytest.raises(ValueError, match=r"^parse mode must be one of \('official', 'lenient'\), got 'x'$"):
        SPARKLE.parse(reply, "x")


# -- the official rule -------------------------------------------------------------------------------
@pytest.mark.parametrize("reply", ["", "  \n\t ", None, 5])
def test_official_rejects_empty_or_non_text_replies(reply: object) -> None:
    with pytest.raises(ReplyError, match=r"^empty reply$"):
        parse_scores_official(reply, SPARKLE.dimensions)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value, message",
    [
        ("abc", "^Instruction Compliance: 'abc' is not a number$"),
        ("inf", "^Instruction Compliance: 'inf' is not a number$"),  # int(float('inf')) overflows
        ("nan", "^Instruction Compliance: 'nan' is not a number$"),
        ("0", "^Instruction Compliance: '0' is outside 1-5$"),
        ("6", "^Instruction Compliance: '6' is outside 1-5$"),
        ("5.9999", None),
        ("1", None),
        ("  5 ", None),
    ],
)
def test_official_value_rule(value: str, message: str | None) -> None:
    reply = official_reply([4] * 6).replace("Instruction Compliance: 4", f"Instruction Compliance:{value}")
    if message is None:
        assert parse_scores_official(reply, SPARKLE.dimensions)[0] == int(float(value))
    else:
        with pytest.raises(ReplyError, match=message):
            parse_scores_official(reply, SPARKLE.dimensions)


def test_official_names_every_missing_dimension_in_order() -> None:
    reply = "Overall Visual Quality: 3\nBackground Dynamics: 2"
    missing = [d for d in SPARKLE.dimensions if d not in ("Overall Visual Quality", "Background Dynamics")]
    with pytest.raises(ReplyError, match="^" + re.escape(f"reply lacks scores for {missing}") + "$"):
        parse_scores_official(reply, SPARKLE.dimensions)


def test_official_strip_lines_switch() -> None:
    reply = "  A: 2\nB: 3 "
    assert parse_scores_official(reply, ("A", "B")) == [2, 3]
    assert parse_scores_official(reply, ("A", "B"), strip_lines=True) == [2, 3]
    with pytest.raises(ReplyError, match=r"lacks scores for \['A'\]"):
        parse_scores_official(reply, ("A", "B"), strip_lines=False)


def test_official_line_counts_for_the_first_matching_name_only() -> None:
    # "A: B: 3" starts with both "A:" and "A: B:": it is A's line, and A: B stays missing
    with pytest.raises(ReplyError, match=r"lacks scores for \['A: B'\]"):
        parse_scores_official("A: B: 3", ("A", "A: B"))


# -- the lenient rule --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "line, expected",
    [
        ("> Instruction Compliance: 3", 3),
        ("## Instruction Compliance: 3", 3),
        ("1) Instruction Compliance: 3", 3),
        ("12. Instruction Compliance: 3", 3),
        ("_Instruction Compliance_: 3", 3),
        ("* **Instruction Compliance** : 3", 3),
        ("Instruction  Compliance: 3", 3),  # any run of blanks between the words
        ("Instruction\tCompliance: 3", 3),
        ("Instruction Compliance (IC): 3", 3),
        ("Instruction Compliance (IC) = 3", 3),
        ("INSTRUCTION COMPLIANCE: 3", 3),
        ("Instruction Compliance: **3**", 3),
        ("Instruction Compliance: +3", 3),
        ("Instruction Compliance: 3.0", 3),
        ("Instruction Compliance \uff1a3", 3),
        ("Instruction Compliance: 1", 1),
        ("Instruction Compliance: 5", 5),
    ],
)
def test_lenient_accepts(line: str, expected: int) -> None:
    reply = official_reply([5] * 6).replace("Instruction Compliance: 5", line)
    assert parse_scores(reply, SPARKLE.dimensions) == [expected, 5, 5, 5, 5, 5]


@pytest.mark.parametrize(
    "line, message",
    [
        ("Instruction Compliance: -1", "^Instruction Compliance: -1 is outside 1-5$"),
        ("Instruction Compliance: 6", "^Instruction Compliance: 6 is outside 1-5$"),
        ("Instruction Compliance: 0", "^Instruction Compliance: 0 is outside 1-5$"),
        ("Instruction Compliance: 2.5", "^Instruction Compliance: 2.5 is not an integer score$"),
        ("xInstruction Compliance: 3", r"^reply lacks scores for \['Instruction Compliance'\]$"),
        ("InstructionCompliance: 3", r"^reply lacks scores for \['Instruction Compliance'\]$"),
        ("Instruction Compliance - 3", r"^reply lacks scores for \['Instruction Compliance'\]$"),
    ],
)
def test_lenient_rejects(line: str, message: str) -> None:
    reply = official_reply([5] * 6).replace("Instruction Compliance: 5", line)
    with pytest.raises(ReplyError, match=message):
        parse_scores(reply, SPARKLE.dimensions)


def test_lenient_names_every_missing_dimension_and_uses_the_last_value() -> None:
    with pytest.raises(ReplyError, match=r"^empty reply$"):
        parse_scores(" \n", SPARKLE.dimensions)
    with pytest.raises(ReplyError, match=r"^empty reply$"):
        parse_scores(None, SPARKLE.dimensions)  # type: ignore[arg-type]
    reply = "Overall Visual Quality: 3\nBackground Dynamics: 2"
    missing = [d for d in SPARKLE.dimensions if d not in ("Overall Visual Quality", "Background Dynamics")]
    with pytest.raises(ReplyError) as err:
        parse_scores(reply, SPARKLE.dimensions)
    assert str(err.value) == f"reply lacks scores for {missing}"
    assert parse_scores("A: 2\nB: 4\nA: 3", ("A", "B")) == [3, 4]


def test_cap_keeps_the_first_and_lowers_the_rest_to_it() -> None:
    assert apply_cap([]) == []
    assert apply_cap([3]) == [3]
    assert apply_cap([3, 5, 3, 1, 4]) == [3, 3, 3, 1, 3]
    assert apply_cap([5, 1, 2]) == [5, 1, 2]
