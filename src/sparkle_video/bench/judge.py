"""The VLM judge: backends behind one protocol, and a resumable, concurrent scoring run.

A backend turns (rubric text, source mp4, edited mp4) into the judge's reply text. Three ship here:
``AzureJudge`` (an Azure OpenAI deployment, the client the official Sparkle-Bench scorer uses),
``OpenAIJudge`` (any OpenAI-compatible endpoint: OpenAI, vLLM, ... via ``base_url``) and ``GeminiJudge``
(native ``google-genai``). Videos go as base64 mp4, the official way, or as sampled JPEG frames for
endpoints without video input.

``judge_results`` asks the judge about every result of a result set with bounded concurrency, retries
transport errors and unusable replies (official budget: 20 attempts, 60 s per request) with exponential
backoff, appends each record to the official ``{theme}_{judge_model}_{protocol}_score.jsonl`` as soon as
it arrives, and on the next run re-asks nothing already answered. API keys come from the environment,
are checked before any work and are never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from .. import safe_write
from ..data.layout import judge_result_name
from ..data.video import VideoReader
from ..errors import redact, register_secret
from .judge_http import MAX_REPLY_BYTES, JudgeStopped, bounded_client, classify_failure
from .results import ResultEntry, ResultSet, frame_counts, mp4_problem, scan_results
from .rubric import PARSE_MODES, JudgeProtocol, ReplyError, get_protocol, rubric_sha256

logger = logging.getLogger("sparkle_video.bench")

#: Official judge settings.
JUDGE_SEED = 42
JUDGE_TEMPERATURE = 0.0
MEDIA_MODES = ("video", "frames")
#: Official retry budget and per-request timeout (``eval_sparkle_bench_gemini.py``).
OFFICIAL_MAX_ATTEMPTS = 20
OFFICIAL_TIMEOUT_S = 60.0
#: The official script's Azure settings: endpoint and key variables, API version.
AZURE_ENDPOINT_ENV = "AZURE_ENDPOINT"
AZURE_KEY_ENV = "GEMINI_API_KEY"
AZURE_API_VERSION = "2024-03-01-preview"


class JudgeConfigError(ValueError):
    """The judge cannot start (no API key, bad option): raised before any request is made."""


def require_api_key(env_names: str | Sequence[str]) -> str:
    """The first non-empty of ``env_names``; a clear error naming them otherwise (the key is never shown)."""
    names = [env_names] if isinstance(env_names, str) else list(env_names)
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            register_secret(value)  # from now on redacted from every log line, error and record
            return value
    raise JudgeConfigError(f"no API key: set the environment variable {' or '.join(names)}")


class JudgeBackend(Protocol):
    """Asks a judge model about one (source, edited) pair and returns its reply text."""

    model: str

    def ask(self, text: str, videos: Sequence[bytes]) -> str: ...


def sample_jpegs(video: bytes, num_frames: int = 8, max_side: int = 768, quality: int = 90) -> list[bytes]:
    """``num_frames`` evenly spread frames of an mp4 as JPEG bytes (longest side at most ``max_side``)."""
    import cv2

    reader = VideoReader(video)
    h, w = reader.height, reader.width
    scale = min(1.0, max_side / max(h, w))
    size = (max(2, round(h * scale)), max(2, round(w * scale)))
    out = []
    for frame in reader.get_frames_uniform(min(num_frames, reader.num_frames), size=size):
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        if not ok:  # OpenCV encodes any RGB frame; a broken build would not
            raise ValueError("JPEG encoding failed")
        out.append(buf.tobytes())
    return out


def _data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


class OpenAIJudge:
    """A judge behind any OpenAI-compatible chat-completions endpoint (through the ``openai`` SDK).

    Args:
        model: model name sent to the endpoint (e.g. ``gemini-2.5-pro`` on Azure, a vLLM model name).
        base_url: endpoint root, e.g. ``http://localhost:8000/v1``; default: the SDK's (OpenAI).
        api_key_env: environment variable(s) holding the key.
        media: ``"video"`` (base64 mp4 in an ``image_url`` data URL, as the official scorer sends it) or
            ``"frames"`` (``num_frames`` JPEG frames per video).
        timeout: wall-clock seconds per request (connect, upload and the whole reply); the SDK's own
            retries are off (the run retries with backoff).
        max_reply_bytes: a reply body larger than this is refused unread (default 4 MiB).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | Sequence[str] = "OPENAI_API_KEY",
        media: str = "video",
        num_frames: int = 8,
        timeout: float = OFFICIAL_TIMEOUT_S,
        seed: int = JUDGE_SEED,
        temperature: float = JUDGE_TEMPERATURE,
        max_tokens: int | None = None,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ):
        if media not in MEDIA_MODES:
            raise JudgeConfigError(f"media must be one of {MEDIA_MODES}, got {media!r}")
        key = require_api_key(api_key_env)
        import openai

        self.model = model
        self.base_url = base_url
        self.media = media
        self.num_frames = num_frames
        self.seed = seed
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._client = self._make_client(openai, key, timeout, bounded_client(timeout, max_reply_bytes))

    def _make_client(self, openai: Any, key: str, timeout: float, http: Any) -> Any:
        return openai.OpenAI(
            api_key=key, base_url=self.base_url, timeout=timeout, max_retries=0, http_client=http
        )

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, media={self.media!r})"

    def content(self, text: str, videos: Sequence[bytes]) -> list[dict[str, Any]]:
        """The user message: rubric text, then the source and edited videos."""
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        for label, video in zip(("Source video", "Edited video"), videos, strict=False):
            if self.media == "video":
                parts.append({"type": "image_url", "image_url": {"url": _data_url("video/mp4", video)}})
            else:
                parts.append({"type": "text", "text": f"{label} frames, in time order:"})
                parts += [
                    {"type": "image_url", "image_url": {"url": _data_url("image/jpeg", jpeg)}}
                    for jpeg in sample_jpegs(video, self.num_frames)
                ]
        return parts

    def ask(self, text: str, videos: Sequence[bytes]) -> str:
        kwargs: dict[str, Any] = {}
        if self.max_tokens is not None:
            kwargs["max_tokens"] = self.max_tokens
        response = self._client.chat.completions.create(
            model=self.model,
            messages=[{"role": "user", "content": self.content(text, videos)}],
            temperature=self.temperature,
            seed=self.seed,
            **kwargs,
        )
        if not response.choices:
            raise ReplyError("response has no choices")
        return response.choices[0].message.content or ""


class AzureJudge(OpenAIJudge):
    """The official Sparkle-Bench endpoint: an Azure OpenAI deployment through ``openai.AzureOpenAI``.

    Requests go to ``{endpoint}/openai/deployments/{model}/chat/completions?api-version=...`` with an
    ``api-key`` header, and carry the same body as :class:`OpenAIJudge`. Defaults are the official
    script's: endpoint from ``$AZURE_ENDPOINT``, key from ``$GEMINI_API_KEY``, API version
    ``2024-03-01-preview``. The SDK's own retries are off; the run retries (20 attempts by default).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | Sequence[str] = AZURE_KEY_ENV,
        api_version: str = AZURE_API_VERSION,
        **kwargs: Any,
    ):
        endpoint = base_url or os.environ.get(AZURE_ENDPOINT_ENV, "").strip()
        if not endpoint:
            raise JudgeConfigError(
                f"no Azure endpoint: pass --base-url or set the environment variable {AZURE_ENDPOINT_ENV}"
            )
        self.api_version = api_version
        super().__init__(model, base_url=endpoint, api_key_env=api_key_env, **kwargs)

    def _make_client(self, openai: Any, key: str, timeout: float, http: Any) -> Any:
        return openai.AzureOpenAI(
            azure_endpoint=self.base_url,
            api_version=self.api_version,
            api_key=key,
            timeout=timeout,
            max_retries=0,
            http_client=http,
        )

    def __repr__(self) -> str:
        return (
            f"AzureJudge(model={self.model!r}, endpoint={self.base_url!r}, api_version={self.api_version!r})"
        )


class GeminiJudge:
    """A judge on the native Gemini API (through ``google-genai``); videos go inline as mp4 bytes.

    Requests (uploads included) go through the same bounded transport as :class:`OpenAIJudge`'s:
    ``timeout`` wall-clock seconds each, replies up to ``max_reply_bytes``.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | Sequence[str] = ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        media: str = "video",
        num_frames: int = 8,
        timeout: float = OFFICIAL_TIMEOUT_S,
        seed: int = JUDGE_SEED,
        temperature: float = JUDGE_TEMPERATURE,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ):
        if media not in MEDIA_MODES:
            raise JudgeConfigError(f"media must be one of {MEDIA_MODES}, got {media!r}")
        key = require_api_key(api_key_env)
        from google import genai
        from google.genai import types

        self.model = model
        self.base_url = base_url
        self.media = media
        self.num_frames = num_frames
        self._types = types
        self._config = types.GenerateContentConfig(temperature=temperature, seed=seed)
        http = types.HttpOptions(
            base_url=base_url,
            timeout=int(timeout * 1000),
            httpx_client=bounded_client(timeout, max_reply_bytes),
        )
        self._client = genai.Client(api_key=key, http_options=http)

    def __repr__(self) -> str:
        return f"GeminiJudge(model={self.model!r}, base_url={self.base_url!r}, media={self.media!r})"

    def ask(self, text: str, videos: Sequence[bytes]) -> str:
        t = self._types
        parts = [t.Part.from_text(text=text)]
        for label, video in zip(("Source video", "Edited video"), videos, strict=False):
            if self.media == "video":
                parts.append(t.Part.from_bytes(data=video, mime_type="video/mp4"))
            else:
                parts.append(t.Part.from_text(text=f"{label} frames, in time order:"))
                parts += [
                    t.Part.from_bytes(data=j, mime_type="image/jpeg")
                    for j in sample_jpegs(video, self.num_frames)
                ]
        response = self._client.models.generate_content(
            model=self.model, contents=[t.Content(role="user", parts=parts)], config=self._config
        )
        return response.text or ""

    def upload(
        self, paths: Sequence[str | os.PathLike], sleep: Callable[[float], None] = time.sleep
    ) -> list[Any]:
        """Upload videos through the Files API and wait until none is ``PROCESSING`` (OpenVE-Bench's way)."""
        files = [self._client.files.upload(file=os.fspath(p)) for p in paths]
        for i, f in enumerate(files):
            while f.state == "PROCESSING":
                sleep(2.0)
                f = self._client.files.get(name=f.name)
            files[i] = f
        return files

    def ask_with_files(self, system_instruction: str, files: Sequence[Any]) -> str:
        """OpenVE-Bench's official request: the rubric as system instruction, the two files as contents,
        no sampling settings."""
        response = self._client.models.generate_content(
            model=self.model, config={"system_instruction": system_instruction}, contents=list(files)
        )
        return response.text or ""


BACKENDS = {"openai": OpenAIJudge, "azure": AzureJudge, "gemini": GeminiJudge}


def make_backend(kind: str, model: str, **kwargs: Any) -> JudgeBackend:
    """``openai``, ``azure`` or ``gemini`` backend; checks the API key now (before any work)."""
    if kind not in BACKENDS:
        raise JudgeConfigError(f"backend must be one of {sorted(BACKENDS)}, got {kind!r}")
    return BACKENDS[kind](model, **{k: v for k, v in kwargs.items() if v is not None})


# -- records -------------------------------------------------------------------------------------
def judge_file_name(theme: str, judge_model: str, protocol: str) -> str:
    """Official record file name; ``/`` in model names (``org/model``) becomes ``_``."""
    return judge_result_name(theme, judge_model.replace("/", "_"), protocol)


def summary_file_name(judge_model: str, protocol: str) -> str:
    """The run summary beside the records: ``{judge_model}_{protocol}_summary.json``."""
    return f"{judge_model.replace('/', '_')}_{protocol}_summary.json"


def judge_settings(protocol: JudgeProtocol, parse: str, rubric: str | None) -> dict[str, str]:
    """What decides a result set's scores besides the judge: protocol, parse rule and rubric (hash)."""
    text = protocol.rubric if rubric is None else rubric
    return {
        "protocol": protocol.name,
        "parse": parse,
        "rubric": "built-in" if rubric is None else "custom",
        "rubric_sha256": rubric_sha256(text),
    }


def check_settings(path: Path, settings: Mapping[str, str]) -> None:
    """Refuse to add records judged one way to a result set judged another way (named, before any work)."""
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text(encoding="utf-8")).get("summary", {}).get("judge_settings")
    except (ValueError, AttributeError):
        return
    if previous and dict(previous) != dict(settings):
        raise JudgeConfigError(
            f"{path.name} says these records were judged with {previous}, this run uses {dict(settings)}; "
            "judge into another folder (or delete the old records) so the two are never mixed"
        )


def json_lines(path: str | os.PathLike) -> Iterator[Any]:
    """Each non-blank line of a JSONL file, parsed, or ``None`` where it is not JSON.

    Lines are decoded one by one, so a line a crash cut inside a UTF-8 character is one bad line
    rather than an error for the whole file.
    """
    with open(path, "rb") as f:
        for raw in f:
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    yield json.loads(line)
            except ValueError:  # UnicodeDecodeError and JSONDecodeError
                yield None


def read_records(path: str | os.PathLike, num_dims: int) -> tuple[dict[str, dict], int]:
    """Valid records of a score JSONL by id (last wins) and the number of unusable lines skipped."""
    records: dict[str, dict] = {}
    bad = 0
    p = Path(path)
    if not p.is_file():
        return records, 0
    for rec in json_lines(p):
        try:
            scores = rec["scores"]  # TypeError where the line is not JSON (None)
            if not isinstance(scores, list) or len(scores) != num_dims:
                raise ValueError("wrong number of scores")
            records[str(rec["id"])] = rec
        except (ValueError, KeyError, TypeError):
            bad += 1  # e.g. a line cut short by a crash: that id is simply asked again
    return records, bad


class RecordWriter:
    """Appends one JSON line per record to per-theme files, flushed at once (crash-safe enough)."""

    def __init__(self, ensure_ascii: bool = False) -> None:
        self._lock = threading.Lock()
        self.ensure_ascii = ensure_ascii

    def append(self, path: Path, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=self.ensure_ascii) + "\n"
        with self._lock:  # noqa: SIM117 - the lock first, then the file
            # bytes: a crash may have cut the last line inside a character; a symlinked file is refused
            with safe_write.open_append(path, path.parent) as f:
                if f.seek(0, os.SEEK_END) > 0:  # do not glue onto a line a crash left unterminated
                    f.seek(-1, os.SEEK_END)
                    if f.read(1) != b"\n":
                        f.write(b"\n")
                f.write(line.encode("utf-8"))
                f.flush()


# -- summary -------------------------------------------------------------------------------------
def summarize(
    records: Iterable[Mapping[str, Any]], protocol: JudgeProtocol | str = "sparkle"
) -> dict[str, Any]:
    """Per-theme mean of each dimension, ``overall`` = mean of the dimensions, and a macro row over themes."""
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(proto.dimensions))
    counts: dict[str, int] = defaultdict(int)
    for rec in records:
        theme = str(rec.get("edit_type"))
        for i, s in enumerate(rec["scores"]):
            sums[theme][i] += float(s)
        counts[theme] += 1
    themes: dict[str, dict[str, float]] = {}
    for theme in sorted(sums):
        means = [v / counts[theme] for v in sums[theme]]
        row: dict[str, float] = dict(zip(proto.short_names, means, strict=True))
        if proto.cap:  # Sparkle-Bench: mean of the dimension means
            row["overall"] = sum(means) / len(means)
        else:  # OpenVE-Bench: mean of every score of the edited type
            row["overall"] = sum(sums[theme]) / (counts[theme] * len(means))
        row["count"] = counts[theme]
        themes[theme] = row
    macro: dict[str, float] = {}
    if themes:  # a plain mean over themes, whatever their sample counts (as the official scorers)
        for key in proto.short_names:
            macro[key] = sum(t[key] for t in themes.values()) / len(themes)
        if proto.cap:
            macro["overall"] = sum(macro[k] for k in proto.short_names) / len(proto.short_names)
        else:
            macro["overall"] = sum(t["overall"] for t in themes.values()) / len(themes)
        macro["count"] = sum(counts.values())
    return {"protocol": proto.name, "dimensions": list(proto.dimensions), "themes": themes, "macro": macro}


def format_table(summary: Mapping[str, Any], columns: Sequence[str] | None = None) -> str:
    """Plain-text table of a summary: one row per theme plus ``macro``."""
    rows = dict(summary.get("themes", {}))
    if summary.get("macro"):
        rows["macro"] = summary["macro"]
    if not rows:
        return "(no scores)"
    cols = (
        list(columns)
        if columns
        else ["overall", *[k for k in next(iter(rows.values())) if k not in ("overall", "count")]]
    )
    cols.append("count")
    width = max(8, *(len(c) for c in cols))
    name_w = max(8, *(len(n) for n in rows))
    lines = ["theme".ljust(name_w) + "".join(c.rjust(width + 1) for c in cols)]
    for name, row in rows.items():
        cells = []
        for c in cols:
            v = row.get(c)
            if c == "count":
                cells.append(str(int(v or 0)).rjust(width + 1))
            elif v is None or (isinstance(v, float) and math.isnan(v)):
                cells.append("-".rjust(width + 1))
            else:
                cells.append(f"{v:.3f}".rjust(width + 1))
        lines.append(name.ljust(name_w) + "".join(cells))
    return "\n".join(lines)


# -- the run -------------------------------------------------------------------------------------
@dataclass
class JudgeRun:
    """Outcome of :func:`judge_results` for one result folder."""

    save_dir: Path
    judge_model: str
    protocol: str
    record_files: dict[str, Path]
    asked: int = 0
    answered: int = 0
    reused: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    unreadable_edited: list[tuple[str, str]] = field(default_factory=list)
    corrupt_lines: int = 0
    #: Results with fewer frames than their source (after the 81-frame cap): ``(id, source, edited)``.
    truncated: list[tuple[str, int, int]] = field(default_factory=list)
    results: ResultSet | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """Everything a user needs: counts, named problems and the summary table (JSON-ready)."""
        problems = self.results.problems() if self.results else {}
        return {
            "save_dir": str(self.save_dir),
            "judge_model": self.judge_model,
            "protocol": self.protocol,
            "counts": {
                **(self.results.counts() if self.results else {}),
                "asked": self.asked,
                "answered": self.answered,
                "reused": self.reused,
                "failed": len(self.failed),
                "unreadable_edited": len(self.unreadable_edited),
                "corrupt_record_lines": self.corrupt_lines,
                "truncated": len(self.truncated),
            },
            "problems": {
                **problems,
                "failed": [{"id": s, "reason": r} for s, r in self.failed],
                "unreadable_edited": [{"id": s, "reason": r} for s, r in self.unreadable_edited],
                "truncated": [
                    {"id": s, "source_frames": a, "edited_frames": b} for s, a, b in self.truncated
                ],
            },
            "record_files": {t: str(p) for t, p in self.record_files.items()},
            "summary": self.summary,
        }


class _Unreadable(Exception):
    pass


class _Cancelled(Exception):
    """A sample not asked because the run was stopped (it is asked on the next run)."""


def _ask_with_retries(
    backend: JudgeBackend,
    proto: JudgeProtocol,
    text: str,
    videos: Sequence[bytes],
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float,
    sleep: Callable[[float], None],
    parse: str = "official",
    stop: threading.Event | None = None,
) -> tuple[list[int], str]:
    """Scores and the (redacted) reply, asking up to ``max_attempts`` times.

    A reply that no retry can change (401, 403, 404, unknown model) sets ``stop`` and raises
    :class:`JudgeStopped`; once ``stop`` is set no sample sends another request. A 429/503 waits the
    server's ``Retry-After`` (capped) instead of the backoff; an oversized reply is not asked again.
    """
    last = "no attempt made"
    for attempt in range(max_attempts):
        if stop is not None and stop.is_set():
            raise _Cancelled("the run was stopped")
        wait: float | None = None
        try:
            reply = backend.ask(text, videos)
            return proto.parse(reply, parse), redact(reply)
        except ReplyError as e:
            last = f"unusable reply: {redact(e)}"
        except Exception as e:  # transport errors, timeouts, HTTP 4xx/5xx: see classify_failure
            failure = classify_failure(e)
            if failure.action == "stop":
                if stop is not None:
                    stop.set()
                raise JudgeStopped(failure.message) from None
            if failure.action == "give_up":
                raise RuntimeError(f"gave up after {attempt + 1} attempts: {failure.message}") from None
            last, wait = failure.message, failure.wait_s
        logger.debug("judge attempt %d/%d failed: %s", attempt + 1, max_attempts, last)
        if attempt + 1 < max_attempts:
            sleep(wait if wait is not None else min(backoff_max_s, backoff_s * (2**attempt)))
    raise RuntimeError(f"gave up after {max_attempts} attempts; last error: {last}")


def check_readable(entry: ResultEntry) -> None:
    """Refuse a corrupt edited file up front: it is not the judge's problem, so it gets no retries."""
    problem = mp4_problem(entry.path)
    if problem is not None:
        raise _Unreadable(problem)


def note_truncation(record: dict[str, Any], entry: ResultEntry) -> dict[str, Any]:
    """``record``, with a ``truncated`` key only when the edit is shorter than its source (other
    records stay exactly as the official scorers write them)."""
    counts = frame_counts(entry)
    if counts is not None:
        record["truncated"] = {"source_frames": counts[0], "edited_frames": counts[1]}
    return record


def _judge_one(
    entry: ResultEntry,
    backend: JudgeBackend,
    proto: JudgeProtocol,
    rubric: str | None,
    retry: dict[str, Any],
) -> dict[str, Any]:
    check_readable(entry)
    source = entry.row["source_video"]
    videos = [
        source.read_bytes() if hasattr(source, "read_bytes") else Path(source).read_bytes(),
        entry.path.read_bytes(),
    ]
    prompt = str(entry.row["prompt"])
    scores, reply = _ask_with_retries(backend, proto, proto.build_prompt(prompt, rubric), videos, **retry)
    reply = reply.strip()  # the official Sparkle-Bench scorer stores the stripped reply
    record = {
        "id": entry.id,
        "prompt": prompt,
        "edit_type": entry.theme,
        "subtheme": entry.row.get("subtheme"),
        "scene": entry.row.get("scene"),
        "scores": scores,
        "result": reply,
    }
    return note_truncation(record, entry)


def retry_options(
    parse: str,
    concurrency: int,
    max_attempts: int,
    backoff_s: float,
    backoff_max_s: float,
    sleep: Callable[[float], None],
) -> dict[str, Any]:
    """Checked run options, as the keyword arguments each sample's retry loop takes."""
    if concurrency < 1 or max_attempts < 1:
        raise JudgeConfigError("concurrency and max_attempts must be at least 1")
    if parse not in PARSE_MODES:
        raise JudgeConfigError(f"parse must be one of {PARSE_MODES}, got {parse!r}")
    return {
        "max_attempts": max_attempts,
        "backoff_s": backoff_s,
        "backoff_max_s": backoff_max_s,
        "sleep": sleep,
        "parse": parse,
        "stop": threading.Event(),
    }


def start_run(
    rows: list[dict[str, Any]],
    save_dir: Path,
    model: str,
    proto: JudgeProtocol,
    settings: dict[str, Any],
) -> tuple[JudgeRun, ResultSet]:
    """A run over the results in ``save_dir`` for ``rows`` (its record files still to name), and those
    results; a folder whose summary names other judge settings is refused before anything is asked."""
    check_settings(save_dir / summary_file_name(model, proto.name), settings)
    results = scan_results(save_dir, rows)
    run = JudgeRun(
        save_dir=save_dir, judge_model=model, protocol=proto.name, record_files={}, results=results
    )
    return run, results


def finish_run(run: JudgeRun, summary: dict[str, Any], settings: dict[str, Any]) -> JudgeRun:
    """``run`` with its summary, which names the judge settings and counts the truncated results."""
    run.summary = {**summary, "judge_settings": settings, "truncated": len(run.truncated)}
    return run


def ask_pending(
    run: JudgeRun,
    pending: Sequence[ResultEntry],
    judge_one: Callable[[ResultEntry], dict[str, Any]],
    keep: Callable[[ResultEntry, dict[str, Any]], None],
    *,
    concurrency: int,
    progress: bool,
) -> None:
    """Judge ``pending`` on a thread pool, handing each record to ``keep`` as it arrives.

    An unreadable edit or a sample whose every attempt failed is named on ``run`` (and asked again on
    the next run). On Ctrl-C queued requests are cancelled, not awaited: what was kept is already on disk.
    A :class:`JudgeStopped` from any sample cancels the rest and is raised once the pool is shut down.
    """
    run.asked = len(pending)
    desc = f"judge {run.judge_model} ({run.protocol})"
    bar = tqdm(total=len(pending), desc=desc, unit="pair", disable=not progress)
    pool = ThreadPoolExecutor(max_workers=concurrency)
    futures: dict[Future[dict[str, Any]], ResultEntry] = {pool.submit(judge_one, e): e for e in pending}
    remaining = set(futures)
    stopped: JudgeStopped | None = None
    try:
        while remaining and stopped is None:
            finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
            for fut in finished:
                entry = futures[fut]
                try:
                    record = fut.result()
                except _Unreadable as e:
                    run.unreadable_edited.append((entry.id, str(e)))
                except JudgeStopped as e:
                    stopped = stopped or e
                except _Cancelled:
                    pass
                except Exception as e:  # upload and read failures included
                    failure = classify_failure(e)  # an upload can meet a bad key first
                    if failure.action == "stop":
                        stopped = stopped or JudgeStopped(failure.message)
                        continue
                    reason = redact(str(e) if isinstance(e, RuntimeError) else f"{type(e).__name__}: {e}")
                    run.failed.append((entry.id, reason))
                    logger.warning("judge %s: %s failed: %s", run.protocol, entry.id, reason)
                else:
                    keep(entry, record)
                    run.answered += 1
                bar.update(1)
    finally:
        pool.shutdown(wait=not remaining, cancel_futures=True)
        bar.close()
    if stopped is not None:
        raise JudgeStopped(f"{stopped}; stopped the run, no further requests sent") from None


def judge_results(
    rows: Iterable[Mapping[str, Any]],
    save_dir: str | os.PathLike,
    backend: JudgeBackend,
    *,
    judge_model: str | None = None,
    protocol: str | JudgeProtocol = "sparkle",
    rubric: str | None = None,
    parse: str = "official",
    concurrency: int = 8,
    max_attempts: int = OFFICIAL_MAX_ATTEMPTS,
    backoff_s: float = 2.0,
    backoff_max_s: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    progress: bool = True,
) -> JudgeRun:
    """Judge every result in ``save_dir`` for the bench ``rows``; resumable and crash-safe.

    Records already in the score files are reused, not re-asked. A sample whose every attempt fails is
    reported by id in ``JudgeRun.failed`` (and asked again on the next run); nothing already answered is
    lost when the run stops early. ``parse`` is ``"official"`` (default) or ``"lenient"``; the summary's
    ``judge_settings`` names it and the rubric's hash, and a folder whose summary names other settings
    is refused.
    """
    proto = get_protocol(protocol) if isinstance(protocol, str) else protocol
    retry = retry_options(parse, concurrency, max_attempts, backoff_s, backoff_max_s, sleep)
    model = judge_model or backend.model
    root = Path(save_dir)
    settings = judge_settings(proto, parse, rubric)
    rows = [dict(r) for r in rows]
    run, results = start_run(rows, root, model, proto, settings)
    themes = sorted({str(r["theme"]) for r in rows})
    files = run.record_files = {t: root / judge_file_name(t, model, proto.name) for t in themes}

    done: dict[str, dict] = {}
    for theme, path in files.items():
        recs, bad = read_records(path, len(proto.dimensions))
        run.corrupt_lines += bad
        done.update({sid: r for sid, r in recs.items() if r.get("edit_type", theme) == theme})
    pending = [e for e in results.entries if e.id not in done]
    run.reused = len(results.entries) - len(pending)
    writer = RecordWriter()

    def keep(entry: ResultEntry, record: dict[str, Any]) -> None:
        writer.append(files[entry.theme], record)
        done[entry.id] = record

    ask_pending(
        run,
        pending,
        lambda e: _judge_one(e, backend, proto, rubric, retry),
        keep,
        concurrency=concurrency,
        progress=progress,
    )
    wanted = {e.id for e in results.entries}
    kept = [r for sid, r in done.items() if sid in wanted]
    run.truncated = sorted(
        (str(r["id"]), int(r["truncated"]["source_frames"]), int(r["truncated"]["edited_frames"]))
        for r in kept
        if isinstance(r.get("truncated"), dict)
    )
    return finish_run(run, summarize(kept, proto), settings)


def load_judge_records(
    save_dir: str | os.PathLike, protocol: str = "sparkle", judge_model: str | None = None
) -> dict[str, list[dict]]:
    """All score records in a result folder, by judge model name (from the official file names)."""
    proto = get_protocol(protocol)
    suffix = f"_{proto.name}_score.jsonl"
    out: dict[str, dict[str, dict]] = defaultdict(dict)
    for path in sorted(Path(save_dir).glob(f"*{suffix}")):
        _, _, model = path.name[: -len(suffix)].partition("_")
        if not model or (judge_model and model != judge_model.replace("/", "_")):
            continue
        recs, _ = read_records(path, len(proto.dimensions))
        out[model].update(recs)
    return {m: list(r.values()) for m, r in out.items()}
