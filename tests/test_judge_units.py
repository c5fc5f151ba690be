"""The judge's parts one by one, without a server: API keys, JPEG frame sampling, the request each backend
builds (through stand-in SDK clients), record files, settings checks, the summary and its table, the retry
loop, and the run's bookkeeping."""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from bench_fixtures import (  # noqa: F401  (the *_fixture names are pytest fixtures, used by name)
    bench_fixture,
    bench_rows,
    reply_text,
    results_fixture,
    source_clip,
)

from sparkle_video.bench import judge as judge_mod
from sparkle_video.bench.judge import (
    AzureJudge,
    GeminiJudge,
    JudgeConfigError,
    JudgeRun,
    OpenAIJudge,
    RecordWriter,
    _ask_with_retries,
    _judge_one,
    _Unreadable,
    ask_pending,
    check_settings,
    finish_run,
    format_table,
    judge_file_name,
    judge_results,
    judge_settings,
    load_judge_records,
    make_backend,
    read_records,
    require_api_key,
    retry_options,
    sample_jpegs,
    start_run,
    summarize,
    summary_file_name,
)
from sparkle_video.bench.results import ResultEntry, ResultSet
from sparkle_video.bench.rubric import OPENVE, SPARKLE, JudgeProtocol, ReplyError, rubric_sha256
from sparkle_video.data.video import VideoReader, write_video

KEY = "sk-unit-SECRET-42"


def mp4(frames: int, height: int, width: int, seed: int = 0) -> bytes:
    """An mp4 of ``frames`` random-texture frames, as bytes."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    write_video(rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8), buf, fps=8)
    return buf.getvalue()


def jpeg_shape(data: bytes) -> tuple[int, ...]:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape


def jpegs_at(video: bytes, num: int, size: tuple[int, int], quality: int = 90) -> list[bytes]:
    """The JPEG bytes of ``num`` uniform frames of ``video`` resized to ``size`` at ``quality``."""
    out = []
    for frame in VideoReader(video).get_frames_uniform(num, size=size):
        bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        out.append(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes())
    return out


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("UNIT_JUDGE_KEY", KEY)
    return KEY


# -- API keys ------------------------------------------------------------------------------------------
def test_require_api_key_takes_the_first_non_empty_and_names_every_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNIT_A", "")
    monkeypatch.setenv("UNIT_B", "   ")
    monkeypatch.setenv("UNIT_C", f"  {KEY} \n")
    monkeypatch.setenv("UNIT_D", "other")
    monkeypatch.delenv("UNIT_NONE", raising=False)
    assert require_api_key(["UNIT_NONE", "UNIT_A", "UNIT_B", "UNIT_C", "UNIT_D"]) == KEY
    assert require_api_key("UNIT_D") == "other"
    assert require_api_key(("UNIT_D", "UNIT_C")) == "other"
    with pytest.raises(JudgeConfigError) as err:
        require_api_key(["UNIT_NONE", "UNIT_A", "UNIT_B"])
    assert str(err.value) == "no API key: set the environment variable UNIT_NONE or UNIT_A or UNIT_B"
    with pytest.raises(JudgeConfigError) as err:
        require_api_key("UNIT_B")  # a plain string is one name, not a sequence of letters
    assert str(err.value) == "no API key: set the environment variable UNIT_B"
    assert issubclass(JudgeConfigError, ValueError)


# -- JPEG frames -------------------------------------------------------------------------------------
def test_sample_jpegs_defaults_eight_frames_at_full_size_quality_90() -> None:
    video = mp4(10, 32, 48)
    jpegs = sample_jpegs(video)
    assert jpegs == jpegs_at(video, 8, (32, 48), 90)
    assert [jpeg_shape(j) for j in jpegs] == [(32, 48, 3)] * 8
    assert sample_jpegs(video, 20) == jpegs_at(video, 10, (32, 48))  # never more than the clip has
    assert sample_jpegs(video, 3, quality=40) == jpegs_at(video, 3, (32, 48), 40)


def test_sample_jpegs_names_a_failed_encode(monkeypatch) -> None:
    monkeypatch.setattr(cv2, "imencode", lambda *args: (False, None))
    with pytest.raises(ValueError, match=r"^JPEG encoding failed$"):
        sample_jpegs(mp4(2, 16, 16), 1)


def test_sample_jpegs_downscales_the_longest_side_to_768() -> None:
    video = mp4(2, 16, 800)
    jpegs = sample_jpegs(video, 2)
    assert [jpeg_shape(j) for j in jpegs] == [(15, 768, 3)] * 2  # 16 * 768 / 800 = 15.36
    assert jpegs == jpegs_at(video, 2, (15, 768))
    assert [jpeg_shape(j) for j in sample_jpegs(video, 1, max_side=100)] == [(2, 100, 3)]


def test_sample_jpegs_never_goes_below_two_pixels() -> None:
    video = mp4(2, 32, 64)
    assert [jpeg_shape(j) for j in sample_jpegs(video, 1, max_side=2)] == [(2, 2, 3)]
    assert [jpeg_shape(j) for j in sample_jpegs(video, 1, max_side=16)] == [(8, 16, 3)]


# -- the OpenAI-compatible backends ------------------------------------------------------------------
class FakeCompletions:
    """Stands in for ``client.chat.completions``: records each ``create`` call, returns ``responses`` in order."""

    def __init__(self, *responses: Any):
        self.responses = list(responses)
        self.calls: list[dict[str, Any]] = []

    def create(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.responses.pop(0)


def chat_response(content: str | None) -> Any:
    return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=content))])


def with_fake_chat(backend: OpenAIJudge, *responses: Any) -> FakeCompletions:
    fake = FakeCompletions(*responses)
    backend._client = SimpleNamespace(chat=SimpleNamespace(completions=fake))
    return fake


def data_url(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def test_openai_judge_client_settings_and_repr(key: str) -> None:
    backend = OpenAIJudge("judge-x", base_url="http://127.0.0.1:9/v1", api_key_env="UNIT_JUDGE_KEY")
    assert (backend.model, backend.base_url, backend.media, backend.num_frames) == (
        "judge-x",
        "http://127.0.0.1:9/v1",
        "video",
        8,
    )
    assert (backend.seed, backend.temperature, backend.max_tokens) == (42, 0.0, None)
    client = backend._client
    assert str(client.base_url) == "http://127.0.0.1:9/v1/"
    assert (client.api_key, client.timeout, client.max_retries) == (KEY, 60.0, 0)
    assert repr(backend) == "OpenAIJudge(model='judge-x', base_url='http://127.0.0.1:9/v1', media='video')"
    other = OpenAIJudge("m", api_key_env="UNIT_JUDGE_KEY", timeout=5.0, media="frames", num_frames=3)
    assert other._client.timeout == 5.0 and (other.media, other.num_frames) == ("frames", 3)


def test_openai_judge_checks_media_before_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNIT_NONE", raising=False)
    with pytest.raises(JudgeConfigError) as err:
        OpenAIJudge("m", api_key_env="UNIT_NONE", media="gif")
    assert str(err.value) == "media must be one of ('video', 'frames'), got 'gif'"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(JudgeConfigError, match=r"OPENAI_API_KEY$"):
        OpenAIJudge("m")  # the default key variable


def test_openai_judge_request_body(key: str) -> None:
    backend = OpenAIJudge("judge-x", api_key_env="UNIT_JUDGE_KEY")
    fake = with_fake_chat(backend, chat_response("Reply"), chat_response(None))
    assert backend.ask("Rate it", [b"src", b"edit"]) == "Reply"
    content = [
        {"type": "text", "text": "Rate it"},
        {"type": "image_url", "image_url": {"url": data_url("video/mp4", b"src")}},
        {"type": "image_url", "image_url": {"url": data_url("video/mp4", b"edit")}},
    ]
    assert fake.calls[0] == {
        "model": "judge-x",
        "messages": [{"role": "user", "content": content}],
        "temperature": 0.0,
        "seed": 42,
    }
    assert backend.ask("Rate it", [b"src", b"edit"]) == ""  # a null content is an empty reply
    tuned = OpenAIJudge("j", api_key_env="UNIT_JUDGE_KEY", seed=7, temperature=0.5, max_tokens=64)
    fake = with_fake_chat(tuned, chat_response("ok"))
    tuned.ask("t", [])
    assert fake.calls[0] == {
        "model": "j",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "t"}]}],
        "temperature": 0.5,
        "seed": 7,
        "max_tokens": 64,
    }
    with_fake_chat(tuned, SimpleNamespace(choices=[]))
    with pytest.raises(ReplyError, match=r"^response has no choices$"):
        tuned.ask("t", [])


def test_openai_judge_frames_content(key: str) -> None:
    source, edited = mp4(10, 16, 24, seed=1), mp4(10, 16, 24, seed=2)
    backend = OpenAIJudge("j", api_key_env="UNIT_JUDGE_KEY", media="frames")
    jpeg = "image/jpeg"
    assert backend.content("T", [source, edited]) == [
        {"type": "text", "text": "T"},
        {"type": "text", "text": "Source video frames, in time order:"},
        *({"type": "image_url", "image_url": {"url": data_url(jpeg, j)}} for j in sample_jpegs(source, 8)),
        {"type": "text", "text": "Edited video frames, in time order:"},
        *({"type": "image_url", "image_url": {"url": data_url(jpeg, j)}} for j in sample_jpegs(edited, 8)),
    ]
    three = OpenAIJudge("j", api_key_env="UNIT_JUDGE_KEY", media="frames", num_frames=3).content(
        "T", [source]
    )
    assert [c["image_url"]["url"] for c in three[2:]] == [data_url(jpeg, j) for j in sample_jpegs(source, 3)]


def test_azure_judge_endpoint_version_key_and_forwarded_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("AZURE_ENDPOINT", "  http://127.0.0.1:9  ")
    backend = AzureJudge("gemini-2.5-pro")
    assert backend.base_url == "http://127.0.0.1:9" and backend.api_version == "2024-03-01-preview"
    client = backend._client
    assert str(client.base_url) == "http://127.0.0.1:9/openai/"
    assert (client.api_key, client._api_version, client.timeout, client.max_retries) == (
        KEY,
        "2024-03-01-preview",
        60.0,
        0,
    )
    assert repr(backend) == (
        "AzureJudge(model='gemini-2.5-pro', endpoint='http://127.0.0.1:9', api_version='2024-03-01-preview')"
    )
    tuned = AzureJudge(
        "dep",
        base_url="http://127.0.0.1:8",
        api_version="2025-01-01",
        media="frames",
        num_frames=3,
        timeout=7.0,
        seed=1,
        temperature=0.2,
        max_tokens=9,
    )
    assert (
        tuned.base_url,
        tuned.media,
        tuned.num_frames,
        tuned.seed,
        tuned.temperature,
        tuned.max_tokens,
    ) == (
        "http://127.0.0.1:8",
        "frames",
        3,
        1,
        0.2,
        9,
    )
    assert (tuned._client.timeout, tuned._client._api_version) == (7.0, "2025-01-01")
    monkeypatch.setenv("AZURE_ENDPOINT", "  ")
    with pytest.raises(JudgeConfigError) as err:
        AzureJudge("dep")
    assert (
        str(err.value) == "no Azure endpoint: pass --base-url or set the environment variable AZURE_ENDPOINT"
    )


# -- the native Gemini backend -----------------------------------------------------------------------
class FakeModels:
    def __init__(self, *texts: str | None):
        self.texts = list(texts)
        self.calls: list[dict[str, Any]] = []

    def generate_content(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return SimpleNamespace(text=self.texts.pop(0))


def gemini(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> GeminiJudge:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("GOOGLE_API_KEY", KEY)  # the second default name
    return GeminiJudge("gemini-2.5-pro", **kwargs)


def test_gemini_judge_settings_and_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = gemini(monkeypatch, base_url="http://127.0.0.1:9")
    assert (backend.model, backend.base_url, backend.media, backend.num_frames) == (
        "gemini-2.5-pro",
        "http://127.0.0.1:9",
        "video",
        8,
    )
    assert (backend._config.temperature, backend._config.seed) == (0.0, 42)
    http = backend._client._api_client._http_options
    assert (http.base_url, http.timeout) == ("http://127.0.0.1:9", 60_000)
    assert http.headers["x-goog-api-key"] == KEY
    assert (
        repr(backend) == "GeminiJudge(model='gemini-2.5-pro', base_url='http://127.0.0.1:9', media='video')"
    )
    tuned = gemini(monkeypatch, timeout=1.5, seed=3, temperature=0.4, media="frames", num_frames=2)
    assert (tuned._config.temperature, tuned._config.seed, tuned.media, tuned.num_frames) == (
        0.4,
        3,
        "frames",
        2,
    )
    assert tuned._client._api_client._http_options.timeout == 1500
    with pytest.raises(JudgeConfigError, match=r"^media must be one of \('video', 'frames'\), got 'gif'$"):
        gemini(monkeypatch, media="gif")
    # the key found is the one the client sends, whichever variable held it
    monkeypatch.delenv("GOOGLE_API_KEY")
    monkeypatch.setenv("UNIT_GEMINI_KEY", "gm-unit-key")
    own = GeminiJudge("g", api_key_env="UNIT_GEMINI_KEY")
    assert own._client._api_client._http_options.headers["x-goog-api-key"] == "gm-unit-key"


def test_gemini_judge_request_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = gemini(monkeypatch)
    fake = FakeModels("Reply", None)
    backend._client = SimpleNamespace(models=fake)
    assert backend.ask("Rate it", [b"src", b"edit"]) == "Reply"
    call = fake.calls[0]
    assert call["model"] == "gemini-2.5-pro" and call["config"] is backend._config
    (content,) = call["contents"]
    assert content.role == "user"
    assert [(p.text, p.inline_data) for p in content.parts[:1]] == [("Rate it", None)]
    assert [(p.inline_data.data, p.inline_data.mime_type) for p in content.parts[1:]] == [
        (b"src", "video/mp4"),
        (b"edit", "video/mp4"),
    ]
    assert backend.ask("x", []) == ""  # no text in the response
    source, edited = mp4(10, 16, 24, seed=3), mp4(10, 16, 24, seed=4)
    frames = gemini(monkeypatch, media="frames", num_frames=2)
    fake = FakeModels("ok")
    frames._client = SimpleNamespace(models=fake)
    frames.ask("T", [source, edited])
    parts = fake.calls[0]["contents"][0].parts
    jpeg_parts = [(p.inline_data.data, p.inline_data.mime_type) if p.inline_data else p.text for p in parts]
    assert jpeg_parts == [
        "T",
        "Source video frames, in time order:",
        *((j, "image/jpeg") for j in sample_jpegs(source, 2)),
        "Edited video frames, in time order:",
        *((j, "image/jpeg") for j in sample_jpegs(edited, 2)),
    ]


def test_gemini_upload_polls_until_not_processing_and_files_request(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = gemini(monkeypatch)
    states = {"a": ["PROCESSING", "PROCESSING", "ACTIVE"], "b": ["ACTIVE"]}
    gets: list[str] = []

    def upload(file: str) -> Any:
        name = Path(file).stem
        return SimpleNamespace(name=name, state=states[name].pop(0))

    def get(name: str) -> Any:
        gets.append(name)
        return SimpleNamespace(name=name, state=states[name].pop(0))

    models = FakeModels("Answer")
    backend._client = SimpleNamespace(files=SimpleNamespace(upload=upload, get=get), models=models)
    waits: list[float] = []
    files = backend.upload([Path("/x/a.mp4"), "/x/b.mp4"], sleep=waits.append)
    assert [(f.name, f.state) for f in files] == [("a", "ACTIVE"), ("b", "ACTIVE")]
    assert gets == ["a", "a"] and waits == [2.0, 2.0]
    assert backend.ask_with_files("System", files) == "Answer"
    assert models.calls == [
        {"model": "gemini-2.5-pro", "config": {"system_instruction": "System"}, "contents": files}
    ]
    models.texts.append(None)
    assert backend.ask_with_files("System", tuple(files)) == ""
    assert models.calls[1]["contents"] == files  # always a list


def test_make_backend_names_the_kinds_and_drops_unset_options(key: str) -> None:
    with pytest.raises(JudgeConfigError) as err:
        make_backend("claude", "m")
    assert str(err.value) == "backend must be one of ['azure', 'gemini', 'openai'], got 'claude'"
    backend = make_backend(
        "openai", "m", api_key_env="UNIT_JUDGE_KEY", media=None, base_url=None, num_frames=2
    )
    assert isinstance(backend, OpenAIJudge) and (backend.model, backend.media, backend.num_frames) == (
        "m",
        "video",
        2,
    )
    azure = make_backend("azure", "dep", api_key_env="UNIT_JUDGE_KEY", base_url="http://127.0.0.1:9")
    assert type(azure) is AzureJudge and azure.base_url == "http://127.0.0.1:9"


# -- records -------------------------------------------------------------------------------------------
def test_record_and_summary_file_names() -> None:
    assert (
        judge_file_name("location", "org/model-7b", "sparkle") == "location_org_model-7b_sparkle_score.jsonl"
    )
    assert judge_file_name("time", "a/b/c", "openve") == "time_a_b_c_openve_score.jsonl"
    assert summary_file_name("org/model", "sparkle") == "org_model_sparkle_summary.json"
    assert summary_file_name("plain", "openve") == "plain_openve_summary.json"


def test_read_records_last_wins_and_counts_unusable_lines(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    assert read_records(path, 6) == ({}, 0)
    good = {"id": 7, "scores": [1, 2, 3]}
    lines = [
        json.dumps(good),
        "",
        "   ",
        '{"id": "a", "scores": [1, 2',  # cut short by a crash
        json.dumps({"id": "b", "scores": "123"}),
        json.dumps({"id": "c", "scores": [1, 2]}),
        json.dumps({"id": "d", "scores": [1, 2, 3, 4]}),
        json.dumps({"scores": [1, 2, 3]}),
        json.dumps({"id": "e"}),
        json.dumps([1, 2, 3]),
        "null",
        json.dumps({"id": "f", "scores": [5, 5, 5], "extra": 1}),
        json.dumps({"id": 7, "scores": [3, 3, 3]}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records, bad = read_records(path, 3)
    assert bad == 8
    assert records == {"7": {"id": 7, "scores": [3, 3, 3]}, "f": {"id": "f", "scores": [5, 5, 5], "extra": 1}}
    assert list(records) == ["7", "f"]
    assert read_records(tmp_path, 3) == ({}, 0)  # a folder is no record file


def test_record_writer_terminates_a_cut_line_and_keeps_unicode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "s.jsonl"
    writer = RecordWriter()
    writer.append(path, {"id": "a", "prompt": "\u00e9l\u00e8ve"})
    assert path.read_text(encoding="utf-8") == '{"id": "a", "prompt": "\u00e9l\u00e8ve"}\n'
    writer.append(path, {"id": "b"})
    assert path.read_text(encoding="utf-8").splitlines() == [
        '{"id": "a", "prompt": "\u00e9l\u00e8ve"}',
        '{"id": "b"}',
    ]
    path.write_text('{"id": "c", "sco', encoding="utf-8")
    RecordWriter(ensure_ascii=True).append(path, {"id": "d", "p": "\u00e9"})
    assert path.read_text(encoding="utf-8") == '{"id": "c", "sco\n{"id": "d", "p": "\\u00e9"}\n'
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    writer.append(empty, {"x": 1})
    assert empty.read_text() == '{"x": 1}\n'
    one = tmp_path / "one.jsonl"
    one.write_text("{")
    writer.append(one, {"x": 1})
    assert one.read_text() == '{\n{"x": 1}\n'


@pytest.mark.parametrize(
    "cut",
    [
        b'{"id": "a", "result": "caf\xc3\xa9',
        b'{"id": "a", "result": "caf\xc3',
        b'{"id": "a", "result": "\xe2\x80',
    ],
)
def test_a_line_cut_inside_a_character_is_terminated_and_read_as_one_bad_line(
    tmp_path: Path, cut: bytes
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"id": "b", "scores": [1, 2]}\n' + cut)
    records, bad = read_records(path, 2)
    assert (records, bad) == ({"b": {"id": "b", "scores": [1, 2]}}, 1)
    RecordWriter().append(path, {"id": "c", "scores": [3, 4], "result": "\u2014 ok"})
    assert path.read_bytes() == (
        b'{"id": "b", "scores": [1, 2]}\n'
        + cut
        + b'\n{"id": "c", "scores": [3, 4], "result": "\xe2\x80\x94 ok"}\n'
    )
    records, bad = read_records(path, 2)
    assert bad == 1 and sorted(records) == ["b", "c"] and records["c"]["result"] == "\u2014 ok"


def test_load_judge_records_by_model(tmp_path: Path) -> None:
    def write(name: str, *recs: dict) -> None:
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")

    six, three = [4] * 6, [3] * 3
    write("location_judge-x_sparkle_score.jsonl", {"id": "l1", "scores": six}, {"id": "l2", "scores": six})
    write("time_judge-x_sparkle_score.jsonl", {"id": "t1", "scores": six}, {"id": "bad", "scores": three})
    write("time_org_model_sparkle_score.jsonl", {"id": "t1", "scores": [2] * 6})
    write("time_sparkle_score.jsonl", {"id": "nomodel", "scores": six})  # no model in the name: skipped
    write("time_judge-x_openve_score.jsonl", {"id": "o1", "scores": three})
    write("notes.jsonl", {"id": "n", "scores": six})
    got = load_judge_records(tmp_path)
    assert sorted(got) == ["judge-x", "org_model"]
    assert sorted(r["id"] for r in got["judge-x"]) == ["l1", "l2", "t1"]
    assert got["org_model"] == [{"id": "t1", "scores": [2] * 6}]
    assert load_judge_records(tmp_path, judge_model="org/model") == {
        "org_model": [{"id": "t1", "scores": [2] * 6}]
    }
    assert load_judge_records(tmp_path, judge_model="judge-x").keys() == {"judge-x"}
    assert load_judge_records(tmp_path, "openve") == {"judge-x": [{"id": "o1", "scores": three}]}
    assert load_judge_records(tmp_path / "missing") == {}


# -- settings ----------------------------------------------------------------------------------------
def test_judge_settings_name_protocol_parse_and_rubric_hash() -> None:
    assert judge_settings(SPARKLE, "official", None) == {
        "protocol": "sparkle",
        "parse": "official",
        "rubric": "built-in",
        "rubric_sha256": rubric_sha256(SPARKLE.rubric),
    }
    assert judge_settings(OPENVE, "lenient", "Rate: {instruction}") == {
        "protocol": "openve",
        "parse": "lenient",
        "rubric": "custom",
        "rubric_sha256": rubric_sha256("Rate: {instruction}"),
    }


def test_check_settings_refuses_only_other_recorded_settings(tmp_path: Path) -> None:
    settings = judge_settings(SPARKLE, "official", None)
    path = tmp_path / "m_sparkle_summary.json"
    check_settings(path, settings)  # no summary yet
    for text in (
        "not json",
        "[1, 2]",
        json.dumps({"summary": {}}),
        json.dumps({"summary": {"judge_settings": {}}}),
    ):
        path.write_text(text)
        check_settings(path, settings)
    path.write_text(json.dumps({"summary": {"judge_settings": settings}}))
    check_settings(path, dict(settings))
    other = judge_settings(SPARKLE, "lenient", None)
    path.write_text(json.dumps({"summary": {"judge_settings": other}}))
    with pytest.raises(JudgeConfigError) as err:
        check_settings(path, settings)
    assert str(err.value) == (
        f"m_sparkle_summary.json says these records were judged with {other}, this run uses {settings}; "
        "judge into another folder (or delete the old records) so the two are never mixed"
    )


# -- summary and table -------------------------------------------------------------------------------
def test_summarize_sparkle_themes_sorted_with_means_and_counts() -> None:
    records = [
        {"edit_type": "time", "scores": [4, 2, 3, 4, 1, 4]},
        {"edit_type": "location", "scores": [2, 2, 2, 2, 2, 2]},
        {"edit_type": "time", "scores": [2, 2, 1, 2, 1, 2]},
        {"scores": ["5", 5, 5, 5, 5, 5]},  # no theme; a numeric string counts as its number
    ]
    s = summarize(records)
    assert s["protocol"] == "sparkle" and s["dimensions"] == list(SPARKLE.dimensions)
    assert list(s["themes"]) == ["None", "location", "time"]
    assert list(s["themes"]["time"]) == ["Ins", "Vis", "FgIn", "FgMo", "BgDy", "BgVi", "overall", "count"]
    assert s["themes"]["time"] == {
        "Ins": 3.0,
        "Vis": 2.0,
        "FgIn": 2.0,
        "FgMo": 3.0,
        "BgDy": 1.0,
        "BgVi": 3.0,
        "overall": 14 / 6,
        "count": 2,
    }
    assert s["themes"]["None"]["overall"] == 5.0 and s["themes"]["location"]["count"] == 1
    assert s["macro"] == {
        "Ins": 10 / 3,
        "Vis": 3.0,
        "FgIn": 3.0,
        "FgMo": 10 / 3,
        "BgDy": 8 / 3,
        "BgVi": 10 / 3,
        "overall": pytest.approx((10 / 3 * 3 + 3 + 3 + 8 / 3) / 6),
        "count": 4,
    }
    assert summarize([]) == {
        "protocol": "sparkle",
        "dimensions": list(SPARKLE.dimensions),
        "themes": {},
        "macro": {},
    }
    assert summarize([], SPARKLE)["protocol"] == "sparkle"


def test_summarize_refuses_a_protocol_whose_short_names_do_not_match_its_dimensions() -> None:
    lopsided = JudgeProtocol(name="x", dimensions=("A", "B"), short_names=("a",), rubric="")
    with pytest.raises(ValueError, match="zip"):
        summarize([{"edit_type": "t", "scores": [1, 2]}], lopsided)


def test_summarize_openve_overall_is_the_mean_of_every_score() -> None:
    records = [{"edit_type": "bg", "scores": [5, 1, 3]}, {"edit_type": "bg", "scores": [2, 2, 2]}]
    records.append({"edit_type": "add", "scores": [1, 1, 4]})
    s = summarize(records, "openve")
    assert s["protocol"] == "openve" and s["dimensions"] == list(OPENVE.dimensions)
    assert s["themes"]["bg"] == {"Ins": 3.5, "VQ": 1.5, "Cons": 2.5, "overall": 15 / 6, "count": 2}
    assert s["themes"]["add"] == {"Ins": 1.0, "VQ": 1.0, "Cons": 4.0, "overall": 2.0, "count": 1}
    assert s["macro"] == {"Ins": 2.25, "VQ": 1.25, "Cons": 3.25, "overall": (15 / 6 + 2.0) / 2, "count": 3}


def test_summarize_overall_differs_between_the_protocols_on_unequal_counts() -> None:
    # a protocol without a cap takes the macro overall as the mean of the theme overalls; with a cap,
    # as the mean of the macro dimensions (both equal here by linearity, so the themes pin it)
    records = [{"edit_type": "a", "scores": [3, 3, 3]}] * 3 + [{"edit_type": "b", "scores": [1, 2, 3]}]
    s = summarize(records, OPENVE)
    assert s["macro"]["overall"] == (3.0 + 2.0) / 2 and s["macro"]["count"] == 4


def test_format_table_layout() -> None:
    summary = summarize(
        [{"edit_type": "bg", "scores": [5, 1, 3]}, {"edit_type": "add", "scores": [1, 1, 4]}], "openve"
    )
    assert format_table(summary) == "\n".join(
        [
            "theme     overall      Ins       VQ     Cons    count",
            "add         2.000    1.000    1.000    4.000        1",
            "bg          3.000    5.000    1.000    3.000        1",
            "macro       2.500    3.000    1.000    3.500        2",
        ]
    )
    assert format_table(summary, columns=["Cons", "Ins"]) == "\n".join(
        [
            "theme        Cons      Ins    count",
            "add         4.000    1.000        1",
            "bg          3.000    5.000        1",
            "macro       3.500    3.000        2",
        ]
    )


def test_format_table_missing_cells_and_wide_names() -> None:
    summary = {
        "themes": {
            "a_very_long_theme": {"overall": float("nan"), "metric_with_long_name": 1.23456, "count": None},
            "b": {"overall": 2, "count": 3.0},
        },
        "macro": {},
    }
    assert format_table(summary) == "\n".join(
        [
            "theme                           overall metric_with_long_name                 count",
            "a_very_long_theme                     -                 1.235                     0",
            "b                                 2.000                     -                     3",
        ]
    )
    assert format_table({"themes": {}, "macro": {}}) == "(no scores)"
    assert format_table({}) == "(no scores)"
    assert format_table({"macro": {"overall": 1.0, "count": 2}}) == (
        "theme     overall    count\nmacro       1.000        2"
    )


# -- the retry loop ----------------------------------------------------------------------------------
class ScriptedBackend:
    """Replies (or raises) from a script, then answers ``default``; records every request."""

    model = "scripted"

    def __init__(self, *steps: str | Exception, default: str = reply_text([4] * 6)):
        self.steps = list(steps)
        self.default = default
        self.asked: list[tuple[str, list[bytes]]] = []

    def ask(self, text: str, videos: Any) -> str:
        self.asked.append((text, list(videos)))
        step = self.steps.pop(0) if self.steps else self.default
        if isinstance(step, Exception):
            raise step
        return step


def test_retry_schedule_doubles_up_to_the_cap_and_logs_each_failure(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="sparkle_video.bench")
    backend = ScriptedBackend(*[ConnectionError("reset")] * 6)
    waits: list[float] = []
    scores, reply = _ask_with_retries(backend, SPARKLE, "t", [b"v"], 7, 0.5, 3.0, waits.append)
    assert scores == [4] * 6 and reply == reply_text([4] * 6)
    assert waits == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert backend.asked == [("t", [b"v"])] * 7
    messages = [r.getMessage() for r in caplog.records if r.name == "sparkle_video.bench"]
    assert messages[0] == "judge attempt 1/7 failed: ConnectionError: reset"
    assert messages[-1] == "judge attempt 6/7 failed: ConnectionError: reset" and len(messages) == 6


def test_retry_gives_up_naming_the_last_error() -> None:
    backend = ScriptedBackend(ConnectionError("reset"), "prose only")
    waits: list[float] = []
    with pytest.raises(RuntimeError) as err:
        _ask_with_retries(backend, SPARKLE, "t", [], 2, 1.0, 5.0, waits.append)
    assert waits == [1.0]  # no wait after the last attempt
    assert str(err.value) == (
        "gave up after 2 attempts; last error: unusable reply: reply lacks scores for "
        f"{list(SPARKLE.dimensions)}"
    )
    with pytest.raises(RuntimeError) as err:
        _ask_with_retries(ScriptedBackend(), SPARKLE, "t", [], 0, 1.0, 1.0, lambda _: None)
    assert str(err.value) == "gave up after 0 attempts; last error: no attempt made"
    backend = ScriptedBackend(ValueError("boom"))
    with pytest.raises(RuntimeError, match=r"last error: ValueError: boom$"):
        _ask_with_retries(backend, SPARKLE, "t", [], 1, 1.0, 1.0, lambda _: None)


def test_retry_parses_officially_unless_told_otherwise() -> None:
    lenient_only = reply_text([3] * 6).replace("Instruction Compliance: 3", "**Instruction Compliance**: 3")
    with pytest.raises(RuntimeError, match="unusable reply"):
        _ask_with_retries(ScriptedBackend(default=lenient_only), SPARKLE, "t", [], 1, 0, 0, lambda _: None)
    scores, _ = _ask_with_retries(
        ScriptedBackend(default=lenient_only), SPARKLE, "t", [], 1, 0, 0, lambda _: None, parse="lenient"
    )
    assert scores == [3] * 6


def test_retry_options_are_checked() -> None:
    def sleep(_: float) -> None:
        pass

    options = retry_options("lenient", 1, 1, 0.5, 4.0, sleep)
    stop = options.pop("stop")
    assert isinstance(stop, threading.Event) and not stop.is_set()  # one per run, shared by its samples
    assert options == {
        "max_attempts": 1,
        "backoff_s": 0.5,
        "backoff_max_s": 4.0,
        "sleep": sleep,
        "parse": "lenient",
    }
    for concurrency, attempts in ((0, 1), (1, 0), (-1, 5)):
        with pytest.raises(JudgeConfigError, match=r"^concurrency and max_attempts must be at least 1$"):
            retry_options("official", concurrency, attempts, 1.0, 1.0, sleep)
    with pytest.raises(JudgeConfigError) as err:
        retry_options("fuzzy", 1, 1, 1.0, 1.0, sleep)
    assert str(err.value) == "parse must be one of ('official', 'lenient'), got 'fuzzy'"


# -- one sample and the run's bookkeeping ------------------------------------------------------------
@pytest.fixture
def pair(tmp_path: Path) -> tuple[dict[str, Any], Path]:
    """A bench row (its source a plain path string) and an edited file three frames shorter."""
    frames, _ = source_clip(frames=9)
    write_video(frames, tmp_path / "src.mp4", fps=16)
    write_video(frames[:6], tmp_path / "edit.mp4", fps=16)
    row = {
        "id": "Sparkle_time_010001",
        "theme": "time",
        "prompt": "Make it night",
        "subtheme": "night",
        "scene": "neon street",
        "source_video": str(tmp_path / "src.mp4"),
    }
    return row, tmp_path / "edit.mp4"


def test_judge_one_sends_both_videos_and_writes_the_official_record(pair: tuple[dict, Path]) -> None:
    row, edited = pair
    backend = ScriptedBackend(default="\n  " + reply_text([3, 5, 4, 2, 5, 1]) + "  \n")
    retry = retry_options("official", 1, 1, 0.0, 0.0, lambda _: None)
    record = _judge_one(ResultEntry(row=row, path=edited), backend, SPARKLE, "Rate {edit_prompt}", retry)
    assert backend.asked == [
        ("Rate Make it night", [Path(row["source_video"]).read_bytes(), edited.read_bytes()])
    ]
    assert record == {
        "id": "Sparkle_time_010001",
        "prompt": "Make it night",
        "edit_type": "time",
        "subtheme": "night",
        "scene": "neon street",
        "scores": [3, 3, 3, 2, 3, 1],
        "result": reply_text([3, 5, 4, 2, 5, 1]),
        "truncated": {"source_frames": 9, "edited_frames": 6},
    }
    assert list(record) == ["id", "prompt", "edit_type", "subtheme", "scene", "scores", "result", "truncated"]
    # a source given as a Path (anything with read_bytes) and the built-in rubric; no subtheme or scene
    plain = {k: v for k, v in row.items() if k not in ("subtheme", "scene")}
    full = ResultEntry(
        row={**plain, "source_video": Path(row["source_video"])}, path=Path(row["source_video"])
    )
    backend = ScriptedBackend()
    record = _judge_one(full, backend, SPARKLE, None, retry)
    assert backend.asked[0][0] == SPARKLE.build_prompt("Make it night")
    assert backend.asked[0][1] == [Path(row["source_video"]).read_bytes()] * 2
    assert "truncated" not in record and record["subtheme"] is None and record["scene"] is None
    edited.write_bytes(b"not a video")
    with pytest.raises(_Unreadable, match="not an MP4"):
        _judge_one(ResultEntry(row=row, path=edited), ScriptedBackend(), SPARKLE, None, retry)


class RecordingPool(ThreadPoolExecutor):
    """A thread pool that remembers the worker count it was asked for."""

    made: list[RecordingPool]

    def __init__(self, max_workers: int | None = None, **kwargs: Any) -> None:
        super().__init__(max_workers, **kwargs)
        self.asked_workers = max_workers
        self.made.append(self)


def record_pools(monkeypatch: pytest.MonkeyPatch) -> list[RecordingPool]:
    """The pools the judge makes from now on (for their worker counts and threads)."""
    monkeypatch.setattr(RecordingPool, "made", [], raising=False)
    monkeypatch.setattr(judge_mod, "ThreadPoolExecutor", RecordingPool)
    return RecordingPool.made


def test_ask_pending_sorts_outcomes_and_names_them(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [ResultEntry(row={"id": i, "theme": "t"}, path=Path(f"{i}.mp4")) for i in "abcd"]

    def judge_one(entry: ResultEntry) -> dict[str, Any]:
        if entry.id == "a":
            raise _Unreadable("truncated mp4")
        if entry.id == "b":
            raise RuntimeError("gave up after 3 attempts; last error: x")
        if entry.id == "c":
            raise OSError("disk gone")
        return {"id": entry.id}

    kept: list[tuple[str, dict]] = []
    run = JudgeRun(save_dir=Path("."), judge_model="m", protocol="sparkle", record_files={})
    caplog.set_level(logging.WARNING, logger="sparkle_video.bench")
    pools = record_pools(monkeypatch)
    ask_pending(run, entries, judge_one, lambda e, r: kept.append((e.id, r)), concurrency=3, progress=False)
    assert [p.asked_workers for p in pools] == [3]
    assert run.asked == 4 and run.answered == 1 and kept == [("d", {"id": "d"})]
    assert run.unreadable_edited == [("a", "truncated mp4")]
    assert sorted(run.failed) == [
        ("b", "gave up after 3 attempts; last error: x"),
        ("c", "OSError: disk gone"),
    ]
    warnings = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert warnings == [
        "judge sparkle: b failed: gave up after 3 attempts; last error: x",
        "judge sparkle: c failed: OSError: disk gone",
    ]


def test_ask_pending_on_interrupt_cancels_queued_requests_without_waiting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pools = record_pools(monkeypatch)
    release = threading.Event()
    started: list[str] = []
    finished: list[str] = []

    def judge_one(entry: ResultEntry) -> dict[str, Any]:
        started.append(entry.id)
        if entry.id != "a":  # every other request hangs until released
            release.wait(3)
        finished.append(entry.id)
        return {}

    def keep(entry: ResultEntry, record: dict[str, Any]) -> None:
        raise KeyboardInterrupt  # Ctrl-C while the first record is kept

    entries = [ResultEntry(row={"id": i, "theme": "t"}, path=Path(f"{i}.mp4")) for i in "abcd"]
    run = JudgeRun(save_dir=Path("."), judge_model="m", protocol="sparkle", record_files={})
    with pytest.raises(KeyboardInterrupt):
        ask_pending(run, entries, judge_one, keep, concurrency=2, progress=False)
    assert finished == ["a"]  # the hanging requests were not awaited
    release.set()
    pools[0].shutdown(wait=True)
    assert "d" not in started  # still queued at the interrupt: cancelled, never sent
    assert run.answered == 0


def test_ask_pending_progress_bar(capsys: pytest.CaptureFixture) -> None:
    entries = [ResultEntry(row={"id": i, "theme": "t"}, path=Path(f"{i}.mp4")) for i in "ab"]
    run = JudgeRun(save_dir=Path("."), judge_model="judge-x", protocol="openve", record_files={})
    ask_pending(run, entries, lambda e: {}, lambda e, r: None, concurrency=1, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"^judge judge-x \(openve\): 100%.* 2/2 \[.*[\d?]pair/s\]$", err.strip().split("\r")[-1])
    ask_pending(run, entries, lambda e: {}, lambda e, r: None, concurrency=1, progress=False)
    assert capsys.readouterr().err == ""


def test_report_of_a_bare_run_and_finish_run() -> None:
    run = JudgeRun(
        save_dir=Path("out"),
        judge_model="m",
        protocol="sparkle",
        record_files={"time": Path("out/t.jsonl")},
        asked=5,
        answered=2,
        reused=1,
        failed=[("a", "why")],
        unreadable_edited=[("b", "cut"), ("c", "cut")],
        corrupt_lines=3,
        truncated=[("d", 9, 6)],
    )
    finish_run(run, {"macro": {"count": 2}}, {"parse": "official"})
    assert run.summary == {"macro": {"count": 2}, "judge_settings": {"parse": "official"}, "truncated": 1}
    assert run.report() == {
        "save_dir": "out",
        "judge_model": "m",
        "protocol": "sparkle",
        "counts": {
            "asked": 5,
            "answered": 2,
            "reused": 1,
            "failed": 1,
            "unreadable_edited": 2,
            "corrupt_record_lines": 3,
            "truncated": 1,
        },
        "problems": {
            "failed": [{"id": "a", "reason": "why"}],
            "unreadable_edited": [{"id": "b", "reason": "cut"}, {"id": "c", "reason": "cut"}],
            "truncated": [{"id": "d", "source_frames": 9, "edited_frames": 6}],
        },
        "record_files": {"time": str(Path("out/t.jsonl"))},
        "summary": run.summary,
    }
    results = ResultSet(save_dir=Path("out"), missing_edited=["x"], unexpected=["y.mp4", "z.mp4"])
    run.results = results
    report = run.report()
    assert list(report["counts"])[:5] == [
        "found",
        "missing_edited",
        "missing_source",
        "missing_metadata",
        "unexpected",
    ]
    assert report["counts"]["missing_edited"] == 1 and report["counts"]["unexpected"] == 2
    assert report["counts"]["asked"] == 5 and report["problems"]["failed"] == [{"id": "a", "reason": "why"}]
    assert report["problems"]["unexpected"] == ["y.mp4", "z.mp4"] and report["problems"][
        "missing_edited"
    ] == ["x"]


def test_start_run_refuses_other_settings_before_scanning(tmp_path: Path) -> None:
    settings = judge_settings(SPARKLE, "official", None)
    (tmp_path / "org_m_sparkle_summary.json").write_text(
        json.dumps({"summary": {"judge_settings": {**settings, "parse": "lenient"}}})
    )
    with pytest.raises(JudgeConfigError, match=r"^org_m_sparkle_summary\.json says"):
        start_run([], tmp_path, "org/m", SPARKLE, settings)
    run, results = start_run([], tmp_path, "other", SPARKLE, settings)
    assert (run.save_dir, run.judge_model, run.protocol, run.record_files) == (
        tmp_path,
        "other",
        "sparkle",
        {},
    )
    assert run.results is results and results.entries == []


# -- a run in process --------------------------------------------------------------------------------
def test_judge_results_defaults(
    results: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    save, info = results
    pools = record_pools(monkeypatch)
    backend = ScriptedBackend(*[ConnectionError("reset")] * 6)
    waits: list[float] = []
    run = judge_results(bench_rows(info)[:1], save, backend, sleep=waits.append)
    assert run.answered == 1 and waits == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]  # 2 s doubling, at most 30 s
    assert [p.asked_workers for p in pools] == [8]
    assert "judge scripted (sparkle): 100%" in capsys.readouterr().err  # a progress bar unless asked not to
    assert run.record_files == {"location": save / "location_scripted_sparkle_score.jsonl"}
    assert run.summary["judge_settings"] == judge_settings(SPARKLE, "official", None)


def test_judge_results_takes_a_protocol_object_and_names_a_custom_rubric(results: tuple[Path, dict]) -> None:
    save, info = results
    backend = ScriptedBackend(default=reply_text([3, 4, 5]))
    rows = bench_rows(info)[:1]
    run = judge_results(rows, save, backend, protocol=OPENVE, rubric="Rate {edit_prompt}", progress=False)
    assert backend.asked[0][0] == f"Rate {rows[0]['prompt']}"
    assert run.summary["judge_settings"] == judge_settings(OPENVE, "official", "Rate {edit_prompt}")
    assert run.summary["judge_settings"]["rubric"] == "custom"
    assert run.summary["macro"]["overall"] == 4.0 and run.protocol == "openve"


def test_judge_results_reuses_only_records_of_the_right_theme_and_wanted_ids(
    results: tuple[Path, dict],
) -> None:
    save, info = results
    ids = sorted(info)  # two location ids, then two time ids
    loc = save / "location_jm_sparkle_score.jsonl"
    stale = {"id": ids[0], "edit_type": "location", "scores": [2] * 6, "result": "r"}
    wrong_theme = {"id": ids[1], "edit_type": "time", "scores": [1] * 6}
    untagged = {"id": ids[2], "scores": [5] * 6}  # no edit_type: belongs to the file it is in (location)
    stray = {"id": "Sparkle_location_099999", "edit_type": "location", "scores": [1] * 6}
    stale["truncated"] = {"source_frames": 9, "edited_frames": 6}
    untagged["truncated"] = {"source_frames": "13", "edited_frames": 2.0}
    stray["truncated"] = {"source_frames": 9, "edited_frames": 1}
    lines = (untagged, wrong_theme, stale, stray)
    loc.write_text("".join(json.dumps(r) + "\n" for r in lines) + "{cut")
    backend = ScriptedBackend()
    run = judge_results(
        bench_rows(info), save, backend, judge_model="jm", sleep=lambda _: None, progress=False
    )
    assert run.corrupt_lines == 1 and run.reused == 2 and run.asked == 2 and run.answered == 2
    asked = {i for i in ids if any(i in text for text, _ in backend.asked)}
    assert asked == {ids[1], ids[3]}
    themes = run.summary["themes"]
    assert run.summary["macro"]["count"] == 4  # the stray id is in no summary
    assert {t: (r["count"], r["Ins"]) for t, r in themes.items()} == {
        "None": (1, 5.0),  # the untagged record, reused as it is
        "location": (2, 3.0),  # the stale record and the re-asked one
        "time": (1, 4.0),
    }
    assert run.summary["judge_settings"] == judge_settings(SPARKLE, "official", None)
    # truncated results: from the kept records only, by id
    assert run.truncated == [(ids[0], 9, 6), (ids[2], 13, 2)] and run.summary["truncated"] == 2
    # the new records are on disk, each in its theme's file
    on_disk = read_records(loc, 6)[0]
    assert on_disk[ids[1]]["scores"] == [4] * 6 and on_disk[ids[1]]["edit_type"] == "location"
    assert read_records(save / "time_jm_sparkle_score.jsonl", 6)[0][ids[3]]["id"] == ids[3]


def test_judge_results_resumes_with_the_same_settings_and_refuses_others(
    results: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    save, info = results
    rows = bench_rows(info)[:1]
    first = judge_results(rows, save, ScriptedBackend(), progress=False)
    (save / "scripted_sparkle_summary.json").write_text(json.dumps({"summary": first.summary}))
    pools = record_pools(monkeypatch)
    again = judge_results(rows, save, ScriptedBackend(), concurrency=3, progress=False)
    assert (again.reused, again.asked) == (1, 0) and [p.asked_workers for p in pools] == [3]
    with pytest.raises(JudgeConfigError, match="judged with"):
        judge_results(rows, save, ScriptedBackend(), parse="lenient", progress=False)
