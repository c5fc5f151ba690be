"""Synthetic Sparkle-Bench material for the bench tests: clips with known motion, a known foreground.

A source clip is a still textured background with a textured square (the "foreground") sliding across
it, as a fixed-camera Sparkle source would look. Edits are built from the source's foreground and a
new background that is still, moving, or flickering, so each metric's expected direction is known.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from sparkle_video.data.video import write_video

KEYWORDS = {
    "location": ["urban: rooftop overlooking skyline", "rural: vineyard rows"],
    "season": ["winter: snowy pine forest", "spring: blossoming orchard"],
    "time": ["dusk: harbour at sunset", "night: neon street"],
    "style": ["cinematic: film noir alley", "art: watercolour village"],
}


def texture(seed: int, height: int, width: int, cell: int = 8) -> np.ndarray:
    """Smooth random colour texture (trackable by optical flow), ``(H, W, 3) uint8``."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 225, size=(height // cell + 2, width // cell + 2, 3)).astype(np.uint8)
    big = cv2.resize(
        small, ((width // cell + 2) * cell, (height // cell + 2) * cell), interpolation=cv2.INTER_CUBIC
    )
    return np.ascontiguousarray(big[:height, :width])


def source_clip(
    seed: int = 0,
    frames: int = 13,
    height: int = 64,
    width: int = 96,
    speed: int = 3,
    box: int = 24,
    fg_cell: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """``(frames, fg_mask)``: still background, a textured square moving right by ``speed`` px/frame
    (``fg_cell``: size in px of the subject's texture detail)."""
    bg = texture(seed, height, width)
    fg_tex = texture(seed + 1000, box, box, cell=fg_cell)
    out = np.empty((frames, height, width, 3), np.uint8)
    mask = np.zeros((frames, height, width), bool)
    y0 = (height - box) // 2
    for t in range(frames):
        x0 = 4 + (speed * t) % max(1, width - box - 8)
        out[t] = bg
        out[t, y0 : y0 + box, x0 : x0 + box] = fg_tex
        mask[t, y0 : y0 + box, x0 : x0 + box] = True
    return out, mask


def edit_clip(source: np.ndarray, mask: np.ndarray, kind: str, seed: int = 7, speed: int = 2) -> np.ndarray:
    """An edit of ``source`` keeping its foreground; ``kind`` sets the new background.

    ``lively``: the new background pans ``speed`` px/frame; ``static``: it stands still;
    ``flicker``: lively, with the whole frame's brightness jumping every frame;
    ``frozen_fg``: lively background, foreground stuck at frame 0; ``damaged_fg``: lively background,
    foreground replaced by noise.
    """
    t, h, w, _ = source.shape
    pano = texture(seed, h, w + speed * t + 8)
    out = np.empty_like(source)
    rng = np.random.default_rng(seed)
    for i in range(t):
        shift = 0 if kind == "static" else speed * i
        bg = pano[:, shift : shift + w]
        if kind == "frozen_fg":
            out[i] = np.where(mask[0][..., None], source[0], bg)
        elif kind == "damaged_fg":
            noise = rng.integers(0, 256, size=source[i].shape, dtype=np.uint8)
            out[i] = np.where(mask[i][..., None], noise, bg)
        else:
            out[i] = np.where(mask[i][..., None], source[i], bg)
        if kind == "flicker":
            delta = 45 if i % 2 else -45
            out[i] = np.clip(out[i].astype(np.int16) + delta, 0, 255).astype(np.uint8)
    return out


def sid(theme: str, n: int) -> str:
    return f"Sparkle_{theme}_{10_000 + n:06d}"


def write_bench(
    root: Path,
    counts: dict[str, int],
    frames: int = 13,
    height: int = 64,
    width: int = 96,
    metadata: bool = True,
) -> dict[str, dict]:
    """Write a Sparkle-Bench folder in the official layout; return ``id -> info``.

    Each info holds ``theme, prompt, subtheme, scene, source (frames), mask``.
    """
    info: dict[str, dict] = {}
    for theme, count in counts.items():
        rows, metas = [], []
        for n in range(count):
            i = sid(theme, n)
            keyword = KEYWORDS[theme][n % 2]
            subtheme, scene = keyword.split(": ")
            prompt = f"Bench prompt for {i}."
            rel = f"source_videos/{theme}/{i}.mp4"
            frames_, mask = source_clip(seed=len(info) * 17 + 3, frames=frames, height=height, width=width)
            write_video(frames_, root / rel, fps=16)
            info[i] = {
                "theme": theme,
                "prompt": prompt,
                "subtheme": subtheme,
                "scene": scene,
                "source": frames_,
                "mask": mask,
                "path": root / rel,
            }
            rows.append({"edited_type": theme, "prompt": prompt, "original_video": rel})
            metas.append(
                {
                    "id": i,
                    "prompt": prompt,
                    "metadata": {"edit_type": theme, "chosen_keyword": keyword, "original_scene": ""},
                }
            )
        with open(root / f"{theme}_bench.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["edited_type", "prompt", "original_video"])
            w.writeheader()
            w.writerows(rows)
        if metadata:
            with open(root / f"{theme}_metadata.jsonl", "w") as f:
                for m in metas:
                    f.write(json.dumps(m) + "\n")
    return info


def write_openve_bench(root: Path, counts: dict[str, int], frames: int = 9) -> dict[str, dict]:
    """An OpenVE-Bench in the official checkout layout: ``root/OpenVE-Bench/benchmark_videos.csv`` whose
    ``original_video`` paths (``OpenVE-Bench/videos/{name}.mp4``) are relative to ``root``."""
    info: dict[str, dict] = {}
    rows = []
    for kind, count in counts.items():
        for _ in range(count):
            name = f"Sparkle_openve_{20_000 + len(info):06d}"
            rel = f"OpenVE-Bench/videos/{name}.mp4"
            frames_, mask = source_clip(seed=len(info) * 13 + 5, frames=frames)
            write_video(frames_, root / rel, fps=16)
            prompt = f"Change the background for {name}; keep the \u00e9l\u00e8ve."
            info[name] = {
                "edited_type": kind,
                "prompt": prompt,
                "path": root / rel,
                "source": frames_,
                "mask": mask,
            }
            rows.append({"edited_type": kind, "prompt": prompt, "original_video": rel})
    (root / "OpenVE-Bench").mkdir(parents=True, exist_ok=True)
    with open(root / "OpenVE-Bench" / "benchmark_videos.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["edited_type", "prompt", "original_video"])
        w.writeheader()
        w.writerows(rows)
    return info


def bench_rows(info: dict[str, dict]) -> list[dict]:
    """Rows shaped like ``load_sparkle_bench`` rows (without loading through ``datasets``)."""
    from sparkle_video.data.video import VideoReader

    return [
        {
            "id": i,
            "theme": d["theme"],
            "prompt": d["prompt"],
            "subtheme": d["subtheme"],
            "scene": d["scene"],
            "original_scene": "",
            "source_video": VideoReader(str(d["path"])),
            "ref_image": None,
        }
        for i, d in info.items()
    ]


def result_path(save_dir: Path, info: dict, i: str) -> Path:
    d = info[i]
    return save_dir / d["theme"] / f"{d['subtheme']}---{d['scene'].replace(' ', '_')}" / f"{i}_edited.mp4"


def write_results(
    save_dir: Path, info: dict[str, dict], kind: str, fps: float = 15, ids: list[str] | None = None
) -> None:
    """Write an edit of ``kind`` (see :func:`edit_clip`) for every id, in the official result layout."""
    for i in ids or list(info):
        d = info[i]
        write_video(edit_clip(d["source"], d["mask"], kind), result_path(save_dir, info, i), fps=fps)


# -- fixtures shared by the judge tests (imported by function name; pytest finds them by ``name``) ---------
@pytest.fixture(name="bench", scope="module")
def bench_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A small Sparkle-Bench (two themes, two samples each) and its ``id -> info``."""
    root = tmp_path_factory.mktemp("bench")
    info = write_bench(root, {"location": 2, "time": 2}, frames=9)
    return root, info


@pytest.fixture(name="results")
def results_fixture(tmp_path: Path, bench: tuple[Path, dict]) -> tuple[Path, dict]:
    """A ``lively`` edit of every ``bench`` sample, in the official result layout."""
    save = tmp_path / "results"
    write_results(save, bench[1], "lively")
    return save, bench[1]


@pytest.fixture(name="server")
def server_fixture():
    """A :class:`JudgeServer`, stopped after the test."""
    s = JudgeServer()
    yield s
    s.close()


def no_sleep(_: float) -> None:
    """A ``sleep`` that returns at once, so retry back-offs cost no time."""


# -- a loopback judge server -----------------------------------------------------------------------
SPARKLE_NAMES = (
    "Instruction Compliance",
    "Overall Visual Quality",
    "Foreground Integrity",
    "Foreground Motion Consistency",
    "Background Dynamics",
    "Background Visual Quality",
)
#: OpenVE-Bench's stored order (its official scorer's record order).
OPENVE_NAMES = ("Instruction Compliance", "Visual Quality & Stability", "Consistency & Detail Fidelity")


def reply_text(scores: list[int]) -> str:
    names = SPARKLE_NAMES if len(scores) == 6 else OPENVE_NAMES
    return "Brief reasoning: background replaced, subject kept.\n" + "\n".join(
        f"{n}: {s}" for n, s in zip(names, scores, strict=True)
    )


class JudgeServer:
    """A real HTTP judge on 127.0.0.1 speaking OpenAI chat-completions (plain and Azure deployment
    paths), Gemini generateContent, and Gemini's resumable file upload (``upload/{version}/files`` start,
    upload+finalize, then ``GET {version}/files/{name}``; a file reads ``PROCESSING`` once, then ``ACTIVE``).

    Replies are scripted per sample id (found in the prompt text), consumed in order; when a script
    runs out the server answers ``default``. Steps: ``("valid", [scores])``, ``("text", reply)``,
    ``("prose",)``, ``("range",)`` (a score of 7), ``("slow",)`` (waits until the server stops),
    ``("500",)``. ``latency`` adds a fixed delay to every reply (used by the throughput benchmark only).
    Uploaded bytes are kept in ``files`` by file name.
    """

    def __init__(self, default: list[int] | None = None, latency: float = 0.0):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.default = default or [4, 4, 4, 4, 4, 4]
        self.latency = latency
        self.script: dict[str, list[tuple]] = {}
        self.requests: list[dict] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.files: dict[str, bytes] = {}
        self.upload_state = "ACTIVE"  # what a just-uploaded file reports; "PROCESSING" makes clients poll
        self.file_gets: list[str] = []
        self._sessions: dict[str, str] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not server._upload(self, raw):
                    server._handle(self, raw)

            def do_GET(self) -> None:
                name = "files/" + self.path.split("?")[0].rsplit("/files/", 1)[-1]
                with server._lock:
                    server.file_gets.append(name)
                server._send(self, 200, server._file(name, "ACTIVE"))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def count(self, sample_id: str) -> int:
        return sum(1 for r in self.requests if r["id"] == sample_id)

    def _next(self, sample_id: str) -> tuple:
        with self._lock:
            steps = self.script.get(sample_id)
            return steps.pop(0) if steps else ("valid", self.default)

    def _file(self, name: str, state: str) -> dict:
        return {
            "name": name,
            "uri": f"{self.url}/v1beta/{name}",  # what clients send back in fileData
            "mimeType": "video/mp4",
            "sizeBytes": str(len(self.files.get(name, b""))),
            "state": state,
        }

    def _upload(self, handler: object, raw: bytes) -> bool:
        """Gemini's resumable upload protocol; ``False`` when the request is not an upload."""
        path = handler.path.split("?")[0]
        command = handler.headers.get("X-Goog-Upload-Command", "")
        if path.startswith("/upload/") and path.endswith("/files") and command == "start":
            with self._lock:
                session = str(len(self._sessions))
                self._sessions[session] = f"files/upload{session}"
            data = b"{}"
            handler.send_response(200)
            handler.send_header("x-goog-upload-url", f"{self.url}/upload-session/{session}")
            handler.send_header("x-goog-upload-status", "active")
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return True
        if path.startswith("/upload-session/"):
            name = self._sessions[path.rsplit("/", 1)[1]]
            with self._lock:
                self.files[name] = self.files.get(name, b"") + raw
            data = json.dumps({"file": self._file(name, self.upload_state)}).encode()
            handler.send_response(200)
            handler.send_header("x-goog-upload-status", "final" if "finalize" in command else "active")
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return True
        return False

    def _handle(self, handler: object, raw: bytes) -> None:
        import re
        import time

        body = json.loads(raw or b"{}")
        match = re.search(rb"Sparkle_[a-z]+_\d{6}", raw[:65536])  # the prompt text comes before the media
        sample_id = match.group(0).decode() if match else "?"
        gemini = ":generateContent" in handler.path
        with self._lock:
            self.requests.append(
                {
                    "id": sample_id,
                    "path": handler.path,
                    "body": body,
                    "headers": {k.lower(): v for k, v in handler.headers.items()},
                }
            )
        step = self._next(sample_id)
        if self.latency:
            time.sleep(self.latency)
        kind = step[0]
        if kind == "slow":
            self.release.wait()
            return
        if kind == "500":
            self._send(handler, 500, {"error": {"message": "internal error", "type": "server_error"}})
            return
        if kind == "valid":
            content = reply_text(list(step[1]))
        elif kind == "text":
            content = step[1]
        elif kind == "range":
            content = reply_text([7, *self.default[1:]])
        else:
            content = "I think the edit looks nice overall, the colours are pleasant."
        if gemini:
            payload = {
                "candidates": [
                    {"content": {"role": "model", "parts": [{"text": content}]}, "finishReason": "STOP"}
                ]
            }
        else:
            payload = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": body.get("model", "judge"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        self._send(handler, 200, payload)

    @staticmethod
    def _send(handler: object, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
