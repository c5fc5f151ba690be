"""Judge protocols: the dimensions, the rubric text sent to the judge, reply parsing and capping.

Two protocols share one mechanism: ``sparkle`` (six dimensions) and ``openve`` (OpenVE-Bench's three).
Scores are integers 1-5. Sparkle-Bench caps every dimension after the first at the first (Instruction
Compliance) in code, so an edit that ignores the instruction cannot score well elsewhere; OpenVE-Bench's
official scorer only asks the judge to do so in the rubric and stores the reply's scores as they are.

Replies are parsed the way the official scorers parse them (``parse="official"``, the default): a line
counts for a dimension only when it starts with the exact ``"<Dimension Name>:"``, the text after its
last ``:`` is read as a number and truncated to an integer, any value outside 1-5 rejects the reply, a
later line overwrites an earlier one, and every dimension must be present. ``parse="lenient"`` also
accepts markdown emphasis, list markers, any letter case, ``4/5`` and ``=`` (never the default: the
published numbers were produced with the official rule).

The rubric text below is this project's own wording of the dimensions, scale and cap. To reproduce
published numbers, pass the official text with ``rubric=`` (``--rubric FILE``): ``{edit_prompt}`` or
``{instruction}`` in it is replaced by the instruction; without a placeholder the instruction is appended.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

SCORE_MIN, SCORE_MAX = 1, 5
#: Reply parsing rules: ``official`` (default, the official scorers' rule) or ``lenient``.
PARSE_MODES = ("official", "lenient")


class ReplyError(ValueError):
    """A judge reply that cannot be turned into valid scores (missing, unparsable or out of range)."""


@dataclass(frozen=True)
class JudgeProtocol:
    """A scoring protocol: dimension names in stored order (the first is Instruction Compliance) and the
    default rubric; ``cap`` says whether scores are capped at the first in code, ``strip_lines`` whether
    reply lines are stripped before the name test (both as in that protocol's official scorer)."""

    name: str
    dimensions: tuple[str, ...]
    short_names: tuple[str, ...]
    rubric: str
    cap: bool = True
    strip_lines: bool = True

    def build_prompt(self, instruction: str, rubric: str | None = None) -> str:
        """The judge's text: rubric with the instruction filled in (videos follow it in the message)."""
        text = self.rubric if rubric is None else rubric
        for placeholder in ("{edit_prompt}", "{instruction}"):
            if placeholder in text:
                return text.replace(placeholder, instruction)
        return f"{text.rstrip()}\n\nEditing instruction: {instruction}\n"

    def parse(self, reply: str, mode: str = "official") -> list[int]:
        """Scores in dimension order (capped when the protocol caps); :class:`ReplyError` otherwise."""
        if mode == "official":
            scores = parse_scores_official(reply, self.dimensions, strip_lines=self.strip_lines)
        elif mode == "lenient":
            scores = parse_scores(reply, self.dimensions)
        else:
            raise ValueError(f"parse mode must be one of {PARSE_MODES}, got {mode!r}")
        return apply_cap(scores) if self.cap else scores


#: The judged dimensions, in the official order (dimension 1 caps the others).
SPARKLE_DIMENSIONS = (
    "Instruction Compliance",
    "Overall Visual Quality",
    "Foreground Integrity",
    "Foreground Motion Consistency",
    "Background Dynamics",
    "Background Visual Quality",
)
#: OpenVE-Bench's official scorer stores [Instruction, Visual Quality & Stability, Consistency & Detail].
OPENVE_DIMENSIONS = ("Instruction Compliance", "Visual Quality & Stability", "Consistency & Detail Fidelity")

_SCALE = """Score each dimension on an integer scale from 1 (worst) to 5 (best):
5 = flawless, 4 = minor issues only, 3 = clearly visible problems, 2 = major problems, 1 = failed."""

_REPLY = """Reply with one short line of reasoning (at most 30 words), then exactly one line per dimension in
this order and format, nothing else:
{lines}"""

SPARKLE_RUBRIC = (
    """You judge instruction-guided video background replacement. You receive the editing instruction,
then the source video, then the edited video. The edit should keep the foreground (people, animals,
objects) and its motion exactly as in the source, and replace only the background with the scene the
instruction asks for, with natural background motion.

"""
    + _SCALE
    + """

Instruction Compliance: does the new background show what the instruction asks for (content, style, mood,
any requested motion) while the foreground stays itself? 1 = nothing changed, unrelated background, or the
subject replaced; 5 = exactly what was asked.
Overall Visual Quality: is the whole clip clean (no tearing, blur, banding, flicker), and is the foreground
lit and colour-graded to sit naturally in the new scene (light direction, colour temperature, shadows)?
A subject keeping daylight against a night background is a major harmonisation failure.
Foreground Integrity: is the subject intact in every frame (shape, texture, identity; no holes, halos,
erosion by the background or drift)?
Foreground Motion Consistency: does the subject move exactly as in the source (trajectory, timing,
gestures), without freezing, looping or jitter?
Background Dynamics: does the background move the way the instruction implies? Judge appropriateness, not
amount: gentle prompts deserve gentle motion, energetic prompts energetic motion; a still background
scores low unless the instruction asks for stillness, in which case stillness scores 5.
Background Visual Quality: is the background sharp, geometrically coherent and stable over time (no
melting, warping or incoherent texture)?

Rule: none of the last five scores may be higher than the Instruction Compliance score.

"""
    + _REPLY.format(lines="\n".join(f"{d}: <1-5>" for d in SPARKLE_DIMENSIONS))
    + """

Editing instruction: {instruction}
"""
)

OPENVE_RUBRIC = (
    """You judge instruction-guided video background changes. You receive the editing instruction, then the
source video, then the edited video.

"""
    + _SCALE
    + """

Instruction Compliance: is the background changed to what the instruction asks while the subject stays?
Visual Quality & Stability: is the result clean, well harmonised and temporally stable (no flicker,
warping or artefacts)?
Consistency & Detail Fidelity: are the subject and everything the instruction did not ask to change
preserved in shape, identity, detail and motion?

Rule: neither of the last two scores may be higher than the Instruction Compliance score.

"""
    + _REPLY.format(lines="\n".join(f"{d}: <1-5>" for d in OPENVE_DIMENSIONS))
    + """

Editing instruction: {instruction}
"""
)

SPARKLE = JudgeProtocol(
    name="sparkle",
    dimensions=SPARKLE_DIMENSIONS,
    short_names=("Ins", "Vis", "FgIn", "FgMo", "BgDy", "BgVi"),
    rubric=SPARKLE_RUBRIC,
)

OPENVE = JudgeProtocol(
    name="openve",
    dimensions=OPENVE_DIMENSIONS,
    short_names=("Ins", "VQ", "Cons"),
    rubric=OPENVE_RUBRIC,
    cap=False,
    strip_lines=False,
)

PROTOCOLS: dict[str, JudgeProtocol] = {p.name: p for p in (SPARKLE, OPENVE)}


def get_protocol(name: str) -> JudgeProtocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {sorted(PROTOCOLS)}") from None


def rubric_sha256(rubric: str) -> str:
    """Hash of a rubric template (before the instruction is filled in): which rubric judged a result set."""
    return hashlib.sha256(rubric.encode("utf-8")).hexdigest()


def parse_scores_official(reply: str, dimensions: tuple[str, ...], *, strip_lines: bool = True) -> list[int]:
    """Scores for ``dimensions`` under the official scorers' rule (see the module docstring); uncapped.

    Python's own ``str.splitlines``, ``str.strip`` and ``float`` define lines, whitespace and numbers,
    as in the official scripts. Raises :class:`ReplyError` naming the first problem.
    """
    if not isinstance(reply, str) or not reply.strip():
        raise ReplyError("empty reply")
    found: dict[str, int] = {}
    for raw in reply.splitlines():
        line = raw.strip() if strip_lines else raw
        for name in dimensions:
            if not line.startswith(f"{name}:"):
                continue
            text = line.split(":")[-1].strip()
            try:
                value = int(float(text))
            except (ValueError, OverflowError):
                raise ReplyError(f"{name}: {text!r} is not a number") from None
            if not SCORE_MIN <= value <= SCORE_MAX:
                raise ReplyError(f"{name}: {text!r} is outside {SCORE_MIN}-{SCORE_MAX}")
            found[name] = value  # a later line for the same dimension overwrites an earlier one
            break
    missing = [name for name in dimensions if name not in found]
    if missing:
        raise ReplyError(f"reply lacks scores for {missing}")
    return [found[name] for name in dimensions]


def _line_pattern(name: str) -> re.Pattern[str]:
    # Tolerates markdown emphasis and list markers around the name, e.g. "- **Foreground Integrity**: 4/5".
    escaped = re.escape(name).replace(r"\ ", r"\s+")
    return re.compile(
        rf"^[\s>*_#\-\d.)]*{escaped}[\s*_]*(?:\([^)]*\))?[\s*_]*[:：=][\s*_]*(?P<value>[-+]?\d+(?:\.\d+)?)",
        re.IGNORECASE | re.MULTILINE,
    )


def parse_scores(reply: str, dimensions: tuple[str, ...]) -> list[int]:
    """Scores for ``dimensions`` from ``Name: N`` lines (last occurrence wins); uncapped.

    Raises :class:`ReplyError` naming what is missing, non-integer or outside 1-5.
    """
    if not isinstance(reply, str) or not reply.strip():
        raise ReplyError("empty reply")
    scores: list[int] = []
    missing: list[str] = []
    for name in dimensions:
        matches = list(_line_pattern(name).finditer(reply))
        if not matches:
            missing.append(name)
            continue
        raw = matches[-1].group("value")
        value = float(raw)
        if value != int(value):
            raise ReplyError(f"{name}: {raw} is not an integer score")
        if not SCORE_MIN <= value <= SCORE_MAX:
            raise ReplyError(f"{name}: {raw} is outside {SCORE_MIN}-{SCORE_MAX}")
        scores.append(int(value))
    if missing:
        raise ReplyError(f"reply lacks scores for {missing}")
    return scores


def apply_cap(scores: list[int]) -> list[int]:
    """Cap every score after the first at the first (the anti-hacking rule)."""
    if not scores:
        return []
    cap = scores[0]
    return [cap, *(min(s, cap) for s in scores[1:])]
