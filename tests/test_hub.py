"""The Hub path, end to end, against a loopback Hub on 127.0.0.1 and the real ``huggingface_hub`` client.

Each Hub load runs in a subprocess whose environment points ``HF_ENDPOINT`` at the loopback server
(``huggingface_hub`` reads it, and ``HF_HUB_OFFLINE``, when imported); the server's request log says
what crossed the network. Local loads of the same folders are the reference.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import pack, write_bench, write_train
from hub_server import LoopbackHub, hub_env, last_json, run_hub_python

from sparkle_video import load_sparkle, load_sparkle_bench
from sparkle_video.data.video import write_video

# End to end (subprocesses, servers, whole runs): in CI, left out of mutation runs (see pyproject.toml).
pytestmark = pytest.mark.e2e

FOLDER_REPO, SHARD_REPO, BENCH_REPO = "tests/sparkle", "tests/sparkle-shards", "tests/sparkle-bench"

#: Loads datasets from the loopback Hub and prints, per load, each row's text fields and frame digests
#: (or the error), as one JSON line: a JSON object for one load, a list for several.
LOAD_SCRIPT = """
import hashlib, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
for name in ("httpx", "httpx2", "httpcore", "huggingface_hub", "filelock", "fsspec"):
    logging.getLogger(name).setLevel(logging.WARNING)
from sparkle_video import load_sparkle, load_sparkle_bench
from sparkle_video.errors import SparkleDataError, SparkleHubError, SkipReport

def digest(reader):
    if reader is None:
        return None
    return [reader.num_frames, hashlib.sha256(reader.get_frames().tobytes()).hexdigest()]

def run(repo, streaming, bench, kwargs):
    loader = load_sparkle_bench if bench else load_sparkle
    report = SkipReport()
    try:
        ds = loader(repo, streaming=streaming, skip_report=report, **kwargs)
        rows = {{}}
        for r in ds:
            rows[r["id"]] = {{
                "theme": r["theme"], "prompt": r["prompt"], "subtheme": r["subtheme"], "scene": r["scene"],
                "source": digest(r["source_video"]), "edited": digest(r.get("edited_video")),
            }}
        return {{"rows": rows, "skipped": report.ids}}
    except (SparkleDataError, SparkleHubError) as e:
        return {{"error": type(e).__name__, "message": str(e)}}

results = [run(*spec) for spec in {specs!r}]
print(json.dumps(results[0] if len(results) == 1 else results))
"""


def load_script(repo: str, streaming: bool = False, bench: bool = False, **kwargs) -> str:
    return LOAD_SCRIPT.format(specs=[(repo, streaming, bench, kwargs)])


def loads_script(*specs: tuple[str, bool, bool, dict]) -> str:
    """Several loads in one interpreter: ``(repo, streaming, bench, kwargs)`` each."""
    return LOAD_SCRIPT.format(specs=list(specs))


def noisy_videos(root: Path, info: dict[str, dict], frames: int = 9) -> None:
    """Re-encode every video with noise so that each is ~30 KB (headers are then small beside them)."""
    for sid, entry in info.items():
        for kind in ("source", "edited"):
            rng = np.random.default_rng(zlib.crc32(f"{sid}{kind}".encode()))
            write_video(rng.integers(0, 256, (frames, 48, 64, 3), dtype=np.uint8), root / entry[kind], fps=16)


def local_rows(ds) -> dict[str, dict]:
    def digest(reader):
        if reader is None:
            return None
        return [reader.num_frames, hashlib.sha256(reader.get_frames().tobytes()).hexdigest()]

    return {
        r["id"]: {
            "theme": r["theme"],
            "prompt": r["prompt"],
            "subtheme": r["subtheme"],
            "scene": r["scene"],
            "source": digest(r["source_video"]),
            "edited": digest(r.get("edited_video")),
        }
        for r in ds
    }


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("hub-repos")
    folder, shards, bench = base / "folder", base / "shards", base / "bench"
    info = write_train(folder, {"location": 3, "season": 2})
    noisy_videos(folder, info)
    pack(folder, shards, per_shard=2)
    write_bench(bench, {"location": 2, "time": 1})
    hub = LoopbackHub().start()
    hub.commits = {
        FOLDER_REPO: hub.add_repo(FOLDER_REPO, folder),
        SHARD_REPO: hub.add_repo(SHARD_REPO, shards),
        BENCH_REPO: hub.add_repo(BENCH_REPO, bench),
    }
    yield hub, {"folder": folder, "shards": shards, "bench": bench, "info": info}
    hub.stop()


@pytest.fixture
def hub(repos) -> LoopbackHub:
    server, _ = repos
    server.clear()
    return server


def file_size(root: Path, rel: str) -> int:
    return (root / rel).stat().st_size


def test_themed_download_equals_local_and_fetches_only_that_theme(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    got = last_json(run_hub_python(load_script(FOLDER_REPO, themes="season"), hub, tmp_path))
    assert got["rows"] == local_rows(load_sparkle(paths["folder"], themes="season"))
    season = {
        rel
        for sid, e in paths["info"].items()
        if e["theme"] == "season"
        for rel in (e["source"], e["edited"])
    }
    assert hub.files_fetched() == season | {"prompts/season_train.csv", "prompts/season_train_metadata.jsonl"}
    assert len(hub.requests("tree")) == 1 and len(hub.requests("info")) == 1  # one listing, one pin
    for rel in hub.files_fetched():  # each file crossed the network once, whole
        assert hub.bytes_served(rel) == file_size(paths["folder"], rel)


def test_streaming_folder_equals_local_pinned_and_each_video_fetched_once(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    got = last_json(
        run_hub_python(load_script(FOLDER_REPO, streaming=True, themes="location"), hub, tmp_path)
    )
    assert got["rows"] == local_rows(load_sparkle(paths["folder"], themes="location"))
    videos = [r for r in hub.requests("resolve", "GET") if r.path.endswith(".mp4")]
    assert {r.path for r in videos} == {
        rel for e in paths["info"].values() if e["theme"] == "location" for rel in (e["source"], e["edited"])
    }
    # num_frames (metadata) then get_frames: one request per video, exactly its bytes
    assert len(videos) == len({r.path for r in videos})
    for r in videos:
        assert r.bytes_sent == file_size(paths["folder"], r.path)
    # every file was read at the commit the load resolved, never at "main"
    assert {r.revision for r in hub.requests("resolve")} == {hub.commits[FOLDER_REPO]}


def test_bench_download_and_streaming_equal_local(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    local = local_rows(load_sparkle_bench(paths["bench"], themes="location"))
    specs = [(BENCH_REPO, streaming, True, {"themes": "location"}) for streaming in (False, True)]
    for got in last_json(run_hub_python(loads_script(*specs), hub, tmp_path)):
        assert got["rows"] == local
    assert not any(r.path.startswith(("time", "source_videos/time", "ref_images/time")) for r in hub.log)


def test_streaming_shards_equal_local_and_limit_reads_about_one_pair(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    got = last_json(run_hub_python(load_script(SHARD_REPO, streaming=True), hub, tmp_path))
    assert got["rows"] == local_rows(load_sparkle(paths["folder"]))

    hub.clear()
    got = last_json(run_hub_python(load_script(SHARD_REPO, streaming=True, limit=1), hub, tmp_path / "b"))
    first = "Sparkle_location_000000"
    assert list(got["rows"]) == [first]
    entry = paths["info"][first]
    pair = file_size(paths["folder"], entry["source"]) + file_size(paths["folder"], entry["edited"])
    served = hub.bytes_served("*.tar")
    assert pair <= served <= 2 * pair, (served, pair)
    assert {r.path for r in hub.requests("resolve", "GET")} - {"prompts/location_train.csv"} <= {
        "location_source_video_part00.tar",
        "location_edited_video_part00.tar",
        "prompts/location_train_metadata.jsonl",
        "prompts/season_train.csv",
        "prompts/season_train_metadata.jsonl",
    }


def test_ids_pick_shards_before_downloading(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    wanted = "Sparkle_location_000002"  # the only member of part01
    got = last_json(run_hub_python(load_script(SHARD_REPO, ids=[wanted]), hub, tmp_path))
    assert got["rows"] == local_rows(load_sparkle(paths["folder"], ids=[wanted]))
    whole = {r.path for r in hub.requests("resolve", "GET") if r.range is None and r.path.endswith(".tar")}
    assert whole == {"location_source_video_part01.tar", "location_edited_video_part01.tar"}
    probes = [r for r in hub.requests("resolve", "GET") if r.range is not None]
    assert all(r.bytes_sent <= 1536 for r in probes)  # first-member probes: one header each


def test_limit_downloads_only_the_first_samples(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    got = last_json(run_hub_python(load_script(FOLDER_REPO, limit=2), hub, tmp_path))
    assert got["rows"] == local_rows(load_sparkle(paths["folder"], limit=2))
    videos = {r.path for r in hub.requests("resolve", "GET") if r.path.endswith(".mp4")}
    assert videos == {paths["info"][sid][kind] for sid in got["rows"] for kind in ("source", "edited")}


def test_info_reads_only_the_prompt_files(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    cli = [sys.executable, "-m", "sparkle_video.cli", "info", SHARD_REPO, "--json"]
    proc = subprocess.run(
        cli, env=hub_env(hub, tmp_path), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stderr
    stats = json.loads(proc.stdout)
    assert stats["total"] == 5 and stats["themes"]["location"]["count"] == 3
    assert stats["themes"]["season"]["subthemes"] == {"winter": 1, "spring": 1}
    prompts = sum(p.stat().st_size for p in (paths["shards"] / "prompts").iterdir())
    assert 0 < hub.bytes_served() <= prompts
    assert hub.files_fetched() <= {f"prompts/{p.name}" for p in (paths["shards"] / "prompts").iterdir()}
    assert "HTTP Request" not in proc.stderr and "GET " not in proc.stderr  # request logs stay at DEBUG


def test_fully_cached_repo_loads_offline_and_with_the_hub_down(tmp_path: Path, repos) -> None:
    paths = repos[1]
    cache = tmp_path / "cache"
    with LoopbackHub() as own:
        own.add_repo(FOLDER_REPO, paths["folder"])
        online = last_json(run_hub_python(load_script(FOLDER_REPO, themes="season"), own, cache))
        url = own.url
        own.clear()
        offline = run_hub_python(load_script(FOLDER_REPO, themes="season"), own, cache, offline=True)
        assert last_json(offline) == online
        assert own.log == []  # HF_HUB_OFFLINE=1: not one request
        assert "HF_HUB_OFFLINE=1: loading tests/sparkle from the local cache" in offline.stderr
    down = run_hub_python(load_script(FOLDER_REPO, themes="season"), url, cache)  # server stopped
    assert last_json(down) == online
    assert "the Hub cannot be reached" in down.stderr and "from the local cache" in down.stderr
    # streaming falls back to the cache too
    assert (
        last_json(run_hub_python(load_script(FOLDER_REPO, streaming=True, themes="season"), url, cache))
        == online
    )
    # a theme never downloaded is not in the cache: a clear error, not "missing videos"
    missing = last_json(run_hub_python(load_script(FOLDER_REPO, themes="location"), url, cache))
    assert missing["error"] == "SparkleHubError" and "not in the local cache" in missing["message"]
    # nothing cached at all: one message naming the repo
    empty = last_json(run_hub_python(load_script(FOLDER_REPO), url, tmp_path / "empty"))
    assert empty["error"] == "SparkleHubError"
    assert "not in the local cache" in empty["message"] and f"repo: {FOLDER_REPO}" in empty["message"]


def test_server_error_on_a_video_is_a_hub_error_not_a_skipped_sample(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    bad = paths["info"]["Sparkle_location_000001"]["source"]
    hub.fail(bad, status=500, methods=("GET", "HEAD"))  # a download's HEAD fails too: not "not cached"
    specs = [
        (FOLDER_REPO, streaming, False, {"themes": "location", "errors": "skip"})
        for streaming in (True, False)
    ]
    for got in last_json(run_hub_python(loads_script(*specs), hub, tmp_path, fast_retries=True)):
        assert got.get("error") == "SparkleHubError", got
        assert "HTTP 500" in got["message"] and f"file: {bad}" in got["message"]
        assert f"repo: {FOLDER_REPO}" in got["message"] and hub.commits[FOLDER_REPO] in got["message"]
    # huggingface_hub retried before giving up (the streaming read: 1 + 5 retries)
    assert len([r for r in hub.requests("resolve", "GET") if r.path == bad and r.status == 500]) >= 6


def test_dropped_connection_gives_one_clear_message(repos, hub, tmp_path: Path) -> None:
    hub.drop("location_source_video_part00.tar", after_bytes=100)
    got = last_json(run_hub_python(load_script(SHARD_REPO, streaming=True), hub, tmp_path, fast_retries=True))
    assert got.get("error") == "SparkleHubError", got
    assert "connection to the Hub dropped" in got["message"]
    assert "file: location_source_video_part00.tar" in got["message"] and "\n" not in got["message"]


def test_transient_drop_is_retried_and_the_load_completes(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    rel = paths["info"]["Sparkle_season_000000"]["edited"]
    hub.drop(rel, after_bytes=1000, times=1)
    got = last_json(
        run_hub_python(load_script(FOLDER_REPO, themes="season"), hub, tmp_path, fast_retries=True)
    )
    assert got["rows"] == local_rows(load_sparkle(paths["folder"], themes="season"))
    tries = [r for r in hub.requests("resolve", "GET") if r.path == rel]
    assert len(tries) == 2 and tries[0].bytes_sent == 1000  # cut after 1000 bytes, then fetched again
    assert tries[1].status in (200, 206) and tries[1].bytes_sent + (
        1000 if tries[1].range else 0
    ) == file_size(paths["folder"], rel)


def test_missing_revision_and_repo_say_so_in_both_modes(repos, hub, tmp_path: Path) -> None:
    specs = []
    for streaming in (False, True):
        specs += [(FOLDER_REPO, streaming, False, {"revision": "v9"}), ("tests/nope", streaming, False, {})]
    results = last_json(run_hub_python(loads_script(*specs), hub, tmp_path))
    for revision, repo in zip(results[0::2], results[1::2], strict=True):
        assert revision["error"] == "SparkleHubError" and "revision not found" in revision["message"]
        assert "revision: v9" in revision["message"]
        assert repo["error"] == "SparkleHubError" and "repository not found" in repo["message"]
    cli = [sys.executable, "-m", "sparkle_video.cli", "info", FOLDER_REPO + "-missing"]
    proc = subprocess.run(
        cli, env=hub_env(hub, tmp_path), capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and proc.stderr.startswith(
        "error: dataset repository not found"
    )


def test_streaming_stays_on_its_commit_when_the_repo_moves(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    moved = tmp_path / "v2"
    shutil.copytree(paths["folder"], moved)
    csv = moved / "prompts" / "location_train.csv"
    csv.write_text(csv.read_text().replace("something lively", "a NEW version"))
    old = hub.commits[FOLDER_REPO]
    script = load_script(FOLDER_REPO, streaming=True, themes="location")
    # the repo moves right after the first video is served, mid-epoch
    hub.after("location/*.mp4", lambda: hub.add_repo(FOLDER_REPO, moved))
    try:
        got = last_json(run_hub_python(script, hub, tmp_path / "cache"))
        assert hub.repos[FOLDER_REPO].branches["main"] != old
        assert got["rows"] == local_rows(load_sparkle(paths["folder"], themes="location"))
        assert {r.revision for r in hub.requests("resolve")} == {old}
    finally:
        hub.repos[FOLDER_REPO].branches["main"] = old


def test_slow_responses_time_out_as_a_hub_error(repos, hub, tmp_path: Path) -> None:
    paths = repos[1]
    slow = paths["info"]["Sparkle_location_000000"]["source"]
    hub.stall(slow)
    script = load_script(FOLDER_REPO, streaming=True, themes="location")
    got = last_json(
        run_hub_python(script, hub, tmp_path, fast_retries=True, env_extra={"HF_HUB_DOWNLOAD_TIMEOUT": "1"})
    )
    assert got.get("error") == "SparkleHubError", got
    assert "did not answer in time" in got["message"] and f"file: {slow}" in got["message"]


def test_remote_member_reads_stay_inside_the_member(repos, hub, tmp_path: Path) -> None:
    """A ``VideoReader`` on a byte range of a remote tar asks for exactly that range, once."""
    import tarfile

    paths = repos[1]
    shard = "location_source_video_part00.tar"
    with tarfile.open(paths["shards"] / shard) as tf:
        member = tf.getmembers()[1]
    url = f"hf://datasets/{SHARD_REPO}@{hub.commits[SHARD_REPO]}/{shard}"
    script = f"""
import hashlib, json
from sparkle_video.data.video import VideoReader
r = VideoReader({url!r}, offset={member.offset_data}, size={member.size})
print(json.dumps([r.num_frames, hashlib.sha256(r.get_frames().tobytes()).hexdigest()]))
"""
    got = last_json(run_hub_python(script, hub, tmp_path))
    with tarfile.open(paths["shards"] / shard) as tf:
        local = load_sparkle(paths["folder"], ids=[Path(member.name).stem])[0]["source_video"]
    assert got == [local.num_frames, hashlib.sha256(local.get_frames().tobytes()).hexdigest()]
    reads = hub.requests("resolve", "GET")
    assert [(r.range, r.bytes_sent) for r in reads] == [
        (f"bytes={member.offset_data}-{member.offset_data + member.size - 1}", member.size)
    ]
