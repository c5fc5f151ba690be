"""Training data: Sparkle pairs at the model's working size, bucketed so that batches stack, resumable.

Each pair is cut the way inference prepares a video (``SparkleEditPipeline.preprocess_video``: first
``4k+1`` frames, resized to cover the working size, centre-cropped), so the model trains on exactly what
it later sees. Samples of different size or length go to different buckets; a bucket is emitted as a
batch when it holds ``batch_size`` pairs. The stream's position (epoch, rows read, rows waiting in
buckets) is a small JSON-able dict, so a resumed run continues with the very next batch: rows already
used are skipped without decoding (rows carry lazy ``VideoReader``s).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..data.video import MODEL_MAX_FRAMES, MODEL_MAX_PIXELS, model_frame_size, model_num_frames
from ..errors import SkipReport, SparkleDataError

logger = logging.getLogger("sparkle_video")

Shape = tuple[int, int, int]  # (num_frames, height, width)


@dataclass(frozen=True)
class ShapePolicy:
    """How a pair's training shape is chosen: fixed, or the model's preprocessing of the source.

    Defaults follow the recipe: up to ``max_pixels`` (1280x720) floored to multiples of 32, and the
    largest ``4k+1`` frame count both videos have, up to ``max_frames`` (81).
    """

    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    max_pixels: int = MODEL_MAX_PIXELS
    max_frames: int = MODEL_MAX_FRAMES
    size_multiple: int = 32

    def __post_init__(self) -> None:
        if (self.height is None) != (self.width is None):
            raise ValueError("give both height and width, or neither")
        if self.height is not None and (self.height % self.size_multiple or self.width % self.size_multiple):
            raise ValueError(
                f"height and width must be multiples of {self.size_multiple}, got {self.height}x{self.width}"
            )
        if self.num_frames is not None and (self.num_frames < 1 or (self.num_frames - 1) % 4):
            raise ValueError(f"num_frames must be 4k+1, got {self.num_frames}")

    def shape(self, src_frames: int, tgt_frames: int, src_height: int, src_width: int) -> Shape:
        if self.height is not None:
            h, w = self.height, self.width
        else:
            h, w = model_frame_size(src_height, src_width, self.max_pixels, self.size_multiple)
        available = min(src_frames, tgt_frames)
        f = self.num_frames if self.num_frames is not None else model_num_frames(available, self.max_frames)
        if f > available:
            raise SparkleDataError(f"needs {f} frames but the pair has only {available}")
        return f, h, w


def pair_shape(row: dict, policy: ShapePolicy) -> Shape:
    """Training shape of a row from its videos' headers (no pixel is decoded)."""
    src, tgt = row["source_video"], row["edited_video"]
    if src is None or tgt is None:
        raise SparkleDataError("the pair lacks a source or an edited video")
    return policy.shape(src.num_frames, tgt.num_frames, src.height, src.width)


def bucket_key(shape: Shape) -> str:
    return "x".join(str(v) for v in shape)


@dataclass
class StreamPosition:
    """Where a bucketed stream stands: JSON-able, so it goes in every checkpoint."""

    epoch: int = 0
    rows_seen: int = 0
    pending: dict[str, list[int]] = field(default_factory=dict)  # bucket -> row indices waiting in it

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "rows_seen": self.rows_seen,
            "pending": {k: list(v) for k, v in self.pending.items()},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamPosition:
        return cls(
            int(d["epoch"]), int(d["rows_seen"]), {k: [int(i) for i in v] for k, v in d["pending"].items()}
        )


#: ``(video, num_frames, height, width) -> (T, H, W, 3) uint8`` frames.
Preprocess = Callable[[Any, int, int, int], np.ndarray]


class BucketedPairStream:
    """Endless, resumable stream of training batches from ``rows_for_epoch(epoch)``.

    Args:
        rows_for_epoch: returns the rows of one pass in a deterministic order (e.g. a streaming
            ``load_sparkle`` dataset, shuffled with a seed and ``set_epoch(epoch)``).
        preprocess: ``(video, num_frames, height, width) -> frames``; the pipeline's own
            ``preprocess_video`` in training, so that training and inference crop alike.
        batch_size: pairs per batch (all of one shape).
        policy: how each pair's shape is chosen.
        errors: ``"raise"`` or ``"skip"``; skipped pairs are named in ``skip_report`` and logged.
        max_epochs: stop after this many passes (``None``: forever).
    """

    def __init__(
        self,
        rows_for_epoch: Callable[[int], Iterable[dict]],
        preprocess: Preprocess,
        batch_size: int = 1,
        policy: ShapePolicy | None = None,
        errors: str = "raise",
        skip_report: SkipReport | None = None,
        max_epochs: int | None = None,
    ):
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if errors not in ("raise", "skip"):
            raise ValueError("errors must be 'raise' or 'skip'")
        self.rows_for_epoch = rows_for_epoch
        self.preprocess = preprocess
        self.batch_size = batch_size
        self.policy = policy or ShapePolicy()
        self.errors = errors
        self.skip_report = skip_report if skip_report is not None else SkipReport()
        self.max_epochs = max_epochs
        self.position = StreamPosition()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = StreamPosition.from_dict(state)

    def state_dict(self) -> dict[str, Any]:
        return self.position.to_dict()

    def _prepare(self, index: int, row: dict) -> tuple[Shape, dict] | None:
        name = str(row.get("id") or f"row {index}")
        try:
            shape = pair_shape(row, self.policy)
            f, h, w = shape
            source = self.preprocess(row["source_video"], f, h, w)
            target = self.preprocess(row["edited_video"], f, h, w)
        except SparkleDataError as e:
            if self.errors == "raise":
                raise SparkleDataError(e.reason, path=e.path, sample_id=name) from e
            self.skip_report.add(name, e.reason)
            return None
        if source.shape != target.shape or source.shape[:3] != shape:
            raise SparkleDataError(
                f"preprocessing gave {source.shape} / {target.shape}, expected {shape}", sample_id=name
            )
        return shape, {
            "id": name,
            "prompt": row["prompt"],
            "source": source,
            "target": target,
            "index": index,
        }

    def __iter__(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield ``(batch, position_after_batch)``; ``batch`` holds ``id``, ``prompt`` (lists) and
        ``source``/``target`` ``(B, T, H, W, 3) uint8`` tensors."""
        pos = self.position
        while self.max_epochs is None or pos.epoch < self.max_epochs:
            waiting = {i for idx in pos.pending.values() for i in idx}
            full_pass = pos.rows_seen == 0 and not waiting
            buckets: dict[str, list[dict]] = {}
            emitted = False
            for index, row in enumerate(self.rows_for_epoch(pos.epoch)):
                if index < pos.rows_seen:  # already read before a resume: refill its bucket, else skip it
                    if index in waiting:
                        prepared = self._prepare(index, row)
                        if prepared is not None:
                            buckets.setdefault(bucket_key(prepared[0]), []).append(prepared[1])
                    continue
                prepared = self._prepare(index, row)
                pos.rows_seen = index + 1
                if prepared is None:
                    continue
                key = bucket_key(prepared[0])
                bucket = buckets.setdefault(key, [])
                bucket.append(prepared[1])
                if len(bucket) == self.batch_size:
                    del buckets[key]
                    pos.pending = {k: [s["index"] for s in v] for k, v in buckets.items()}
                    emitted = True
                    yield collate(bucket), pos.to_dict()
                else:
                    pos.pending = {k: [s["index"] for s in v] for k, v in buckets.items()}
            leftover = sum(len(v) for v in buckets.values())
            if full_pass and not emitted:  # would loop forever
                sizes = {k: len(v) for k, v in buckets.items()}
                raise SparkleDataError(
                    f"a whole pass over the training data made no batch of {self.batch_size}: {pos.rows_seen} rows, "
                    f"{len(self.skip_report)} skipped so far, usable pairs per shape {sizes}"
                )
            if leftover:
                logger.info(
                    "epoch %d: %d pairs left in partly filled buckets carry over to no batch",
                    pos.epoch,
                    leftover,
                )
            pos.epoch, pos.rows_seen, pos.pending = pos.epoch + 1, 0, {}


def collate(samples: list[dict]) -> dict[str, Any]:
    """Stack same-shape samples: ``source``/``target`` ``(B, T, H, W, 3) uint8`` tensors, text as lists."""
    return {
        "id": [s["id"] for s in samples],
        "prompt": [s["prompt"] for s in samples],
        "source": torch.from_numpy(np.stack([s["source"] for s in samples])),
        "target": torch.from_numpy(np.stack([s["target"] for s in samples])),
    }


def prefetch(iterable: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Produce items in a background thread (decoding overlaps the training step); order is unchanged."""
    if depth <= 0:
        yield from iterable
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("done", done))
        except BaseException as e:  # handed to the consumer
            q.put(("error", e))

    thread = threading.Thread(target=produce, name="sparkle-train-data", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "done":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        # Stop the producer and wait for it: a thread still decoding while the interpreter shuts down
        # aborts the process ("terminate called without an active exception") after a finished run.
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()  # unblock a pending put
            except queue.Empty:
                thread.join(timeout=0.1)


def collator_preprocess(video: Any, num_frames: int, height: int, width: int) -> np.ndarray:
    """``Preprocess`` through ``SparkleCollator`` (crop policy): frames are resized while they are decoded.

    Same geometry as the pipeline's ``preprocess_video`` (first frames, cover, centre crop) with the
    decoder's area resampling instead of OpenCV's; faster on sources larger than the working size, not
    pixel-identical to what inference feeds the model (the default keeps train and inference identical).
    """
    from ..data.collate import SparkleCollator

    collate = SparkleCollator(
        num_frames, (height, width), value_range=(0.0, 255.0), resize="crop", video_fields=("v",)
    )
    frames = collate([{"v": video}])["v"][0]  # (3, T, H, W) float holding exact uint8 values
    return np.ascontiguousarray(frames.permute(1, 2, 3, 0).round().to(torch.uint8).numpy())


def sparkle_rows(
    source: Any,
    *,
    themes: Any = None,
    subthemes: Any = None,
    min_scores: dict[str, float] | None = None,
    shuffle_buffer: int = 0,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    errors: str = "raise",
    **load_kwargs: Any,
) -> Callable[[int], Iterable[dict]]:
    """``rows_for_epoch`` over ``load_sparkle(source, streaming=True)``, split over ranks and workers.

    With ``shuffle_buffer > 0`` each epoch is shuffled by ``datasets``' buffer shuffle with ``seed``
    and the epoch number, so the order, and therefore resumption, is deterministic.
    """
    from ..data.loading import load_sparkle

    ds = load_sparkle(
        source,
        themes=themes,
        streaming=True,
        subthemes=subthemes,
        min_scores=min_scores,
        rank=rank,
        world_size=world_size,
        errors=errors,
        **load_kwargs,
    )
    if shuffle_buffer > 0:
        ds = ds.shuffle(seed=seed, buffer_size=shuffle_buffer)

    def rows_for_epoch(epoch: int) -> Iterable[dict]:
        if shuffle_buffer > 0:
            ds.set_epoch(epoch)
        return iter(ds)

    return rows_for_epoch
