"""Lazy video decoding and writing on PyAV.

``VideoReader`` reads container metadata without decoding pixels, and decodes only up to the last
frame asked for. Sparkle clips carry a single keyframe (frame 0), so frame ``k`` always costs decoding
frames ``0..k``; the reader therefore decodes forward once and converts only the frames requested, in a
helper thread so that colour conversion and resizing overlap decoding (swscale releases the GIL).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Union

import av
import numpy as np

from ..errors import SparkleDataError, SparkleHubError
from ..safe_write import os_errors
from .display import (
    HTML_HEIGHT,
    HTML_MAX_BYTES,
    HTML_MAX_FRAMES,
    image_tag,
    inline_size,
    text_block,
    video_tag,
)
from .transport import hub_error_for_url

if TYPE_CHECKING:
    import torch

VideoSourceLike = Union[str, os.PathLike, bytes, bytearray, memoryview, IO[bytes], "VideoReader"]

#: Model-side limits (Kiwi-Edit / Kiwi-Sparkle inference settings).
MODEL_MAX_PIXELS = 1280 * 720
MODEL_MAX_FRAMES = 81
MODEL_SIZE_MULTIPLE = 32
#: swscale filter used when frames are resized while being converted (area averaging for downscales).
RESIZE_INTERPOLATION = "AREA"
#: FFmpeg decoder threading. PyAV's default, slice threads: frame threads ("AUTO") conceal a damaged packet
#: (the decode ends early instead of raising at the frame that is bad). On 2 cores, with colour conversion
#: running beside the decoder, "AUTO" measured 6% faster on a full 720p decode and no faster on a resized
#: one, which does not pay for the vaguer errors.
DECODE_THREAD_TYPE = "SLICE"
#: The largest frame side a container may claim (H.264's and HEVC's own limits are below it).
MAX_FRAME_SIDE = 16384


@dataclass(frozen=True)
class VideoMetadata:
    """What the container says about the video stream, read without decoding any frame."""

    num_frames: int
    fps: float
    width: int
    height: int
    duration: float
    codec: str
    pix_fmt: str | None


class _SeekableReader(io.RawIOBase):
    """A read-only, seekable raw stream that tracks its own position in ``_pos`` (the wrappers below)."""

    _pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos


class _RangeFile(_SeekableReader):
    """A read-only window ``[offset, offset+size)`` over a seekable binary file (a tar member)."""

    def __init__(self, raw: IO[bytes], offset: int, size: int):
        self._raw = raw
        self._offset = offset
        self._size = size
        self._pos = 0

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            new = pos
        elif whence == io.SEEK_CUR:
            new = self._pos + pos
        elif whence == io.SEEK_END:
            new = self._size + pos
        else:  # pragma: no cover - io contract
            raise ValueError(f"bad whence {whence}")
        self._pos = min(max(new, 0), self._size)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        remaining = self._size - self._pos
        if remaining <= 0:
            return 0
        view = memoryview(buffer)
        n = min(len(view), remaining)
        self._raw.seek(self._offset + self._pos)
        data = self._raw.read(n)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class _HeadCachedFile(_SeekableReader):
    """A local file that keeps its first ``HEAD_CACHE_BYTES`` in memory once read.

    Opening an mp4 whose index sits at the end reads the first block, jumps to the index, then reads
    the media from the start again: without the cache the first block is read from disk twice (about
    6% of a 0.5 MB Sparkle clip).
    """

    def __init__(self, raw: IO[bytes]):
        self._raw = raw
        self._head = b""
        self._pos = 0

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self._pos = max(pos, 0)
        elif whence == io.SEEK_CUR:
            self._pos = max(self._pos + pos, 0)
        else:
            self._pos = self._raw.seek(pos, whence)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._pos == 0 and not self._head:  # the first block: read it once and keep it
            self._raw.seek(0)
            self._head = self._raw.read(HEAD_CACHE_BYTES)
        if self._pos < len(self._head):
            n = min(len(view), len(self._head) - self._pos)
            view[:n] = self._head[self._pos : self._pos + n]
            self._pos += n
            return n
        self._raw.seek(self._pos)
        n = self._raw.readinto(view)  # type: ignore[attr-defined]
        self._pos += n or 0
        return n or 0

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


class _Borrowed(io.RawIOBase):
    """A caller's file object, used without closing it (the caller owns it)."""

    def __init__(self, raw: IO[bytes]):
        self._raw = raw

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        return self._raw.seek(pos, whence)

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(memoryview(buffer)))
        memoryview(buffer)[: len(data)] = data
        return len(data)


def _open_binary(path: str, storage_options: dict | None) -> IO[bytes]:
    # a path without "://" was found on the local disk (a name may hold "::"; fsspec would split it)
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb", **(storage_options or {})).open()
    return _HeadCachedFile(open(path, "rb", buffering=0))


#: Bytes of a local video's start kept in memory while it is open (see ``_HeadCachedFile``).
HEAD_CACHE_BYTES = 64 * 1024
#: Protocols read in place, never copied into the remote cache.
_LOCAL_PROTOCOLS = ("file", "local", "memory")


def _is_remote(path: str) -> bool:
    """A single-protocol URL on a network store (``hf://``, ``s3://``, ``https://``...)."""
    if "::" in path or "://" not in path:
        return False
    return path.split("://", 1)[0] not in _LOCAL_PROTOCOLS


class RemoteBytesCache:
    """A process-wide, size-bounded LRU of remote video bytes, keyed by ``(url, offset, size)``.

    Reading metadata and then frames opens a video twice; over the network that would fetch the file
    twice. Files are fetched whole (one ranged request for a tar member, never past its end) and kept
    here while they fit in ``max_bytes``; larger files are streamed on every open instead. Keys are
    URLs, so a file replaced in place on its store is seen again only once evicted (Hub loads use
    commit-pinned URLs, which never change).
    """

    def __init__(self, max_bytes: int):
        from collections import OrderedDict

        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._total = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = data
            self._total += len(data)
            while self._total > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self._total -= len(old)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._total = 0

    def __len__(self) -> int:
        return len(self._items)


#: Bound of the remote video cache; ``SPARKLE_VIDEO_REMOTE_CACHE_MB`` changes it (0 turns it off).
remote_cache = RemoteBytesCache(int(os.environ.get("SPARKLE_VIDEO_REMOTE_CACHE_MB", "512")) << 20)


def _open_remote(path: str, offset: int, size: int | None, storage_options: dict | None) -> IO[bytes]:
    """Open ``[offset, offset+size)`` of a remote file, reading each byte at most once per cache life.

    Failed requests raise ``SparkleHubError`` (an outage is not bad data); a missing file raises
    ``SparkleDataError``.
    """
    import fsspec

    try:
        fs, fpath = fsspec.core.url_to_fs(path, **(storage_options or {}))
        if size is None:
            size = int(fs.size(fpath)) - offset
        key = (path, offset, size)
        data = remote_cache.get(key)
        if data is not None:
            return io.BytesIO(data)
        # no read-ahead: one request for exactly the range, so a tar member read stays inside the member
        raw = fs.open(fpath, "rb", cache_type="none")
        if size > remote_cache.max_bytes:
            return io.BufferedReader(_RangeFile(raw, offset, size), buffer_size=1 << 20)  # type: ignore[arg-type]
        with raw:
            raw.seek(offset)
            data = raw.read(size)
    except FileNotFoundError as e:
        err = hub_error_for_url(e.__cause__, path) if e.__cause__ is not None else None
        if err is not None:
            raise err from e
        raise SparkleDataError("video file not found", path=path) from e
    except (SparkleDataError, SparkleHubError):
        raise
    except Exception as e:
        err = hub_error_for_url(e, path)
        if err is None:
            raise
        raise err from e
    if len(data) != size:
        raise SparkleDataError(f"expected {size} bytes, read {len(data)} (the file is short)", path=path)
    remote_cache.put(key, data)
    return io.BytesIO(data)


#: Readers holding their header probe's container open, oldest first; at most ``MAX_HELD_PROBES``, so
#: reading the headers of many videos (a pack check, a listing) never keeps many files open.
MAX_HELD_PROBES = 8
_HELD_PROBES: dict[int, Any] = {}
_HELD_LOCK = threading.Lock()


def _close_quietly(container: Any, f: IO[bytes]) -> None:
    try:
        container.close()
    finally:
        f.close()


def _hold_probe(reader: VideoReader) -> None:
    """Remember ``reader`` as holding an open probe; close the oldest holders beyond the cap."""
    evicted = []
    with _HELD_LOCK:
        _HELD_PROBES[id(reader)] = weakref.ref(reader)
        while len(_HELD_PROBES) > MAX_HELD_PROBES:
            ref = _HELD_PROBES.pop(next(iter(_HELD_PROBES)))
            old = ref()
            if old is not None and old._held is not None:
                evicted.append(old)
    for old in evicted:
        held, old._held = old._held, None
        if held is not None:
            _close_quietly(*held)


class VideoReader:
    """Lazily decoded video from a path, fsspec URL, bytes, binary file object, or a byte range.

    Nothing is opened before metadata or frames are asked for, and no pixel is decoded before frames
    are asked for. ``frames_decoded`` counts decoded frames, so laziness can be checked.

    Args:
        source: local path, fsspec URL (``memory://``, ``hf://``, ``tar://...``), raw bytes, an open
            binary file object, or a callable returning a fresh binary file object.
        offset, size: read only this byte range of ``source`` (a member inside an uncompressed tar).
        name: label used in error messages (defaults to the path).
        storage_options: passed to ``fsspec.open`` for URLs.
    """

    def __init__(
        self,
        source: str | os.PathLike | bytes | bytearray | memoryview | IO[bytes] | Callable[[], IO[bytes]],
        *,
        offset: int = 0,
        size: int | None = None,
        name: str | None = None,
        storage_options: dict | None = None,
    ):
        if isinstance(source, os.PathLike):
            source = os.fspath(source)
        if isinstance(source, (bytearray, memoryview)):
            source = bytes(source)
        self._source = source
        self._offset = int(offset)
        self._size = None if size is None or size < 0 else int(size)
        self._storage_options = storage_options
        self.name = name or (source if isinstance(source, str) else getattr(source, "name", "<video>"))
        if not isinstance(self.name, str):
            self.name = "<video>"
        self._metadata: VideoMetadata | None = None
        self._held: tuple[Any, IO[bytes]] | None = None  # the header probe's container, kept for one decode
        self.frames_decoded = 0
        self.opens = 0

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_held"] = None  # an open container does not travel (e.g. to DataLoader workers)
        return state

    def close(self) -> None:
        """Close the container kept open since the header was read (it is also closed when unused)."""
        held, self._held = self._held, None
        if held is not None:
            _HELD_PROBES.pop(id(self), None)
            _close_quietly(*held)

    # -- opening -------------------------------------------------------------------------------
    @property
    def source(self) -> Any:
        return self._source

    def read_bytes(self) -> bytes:
        """The encoded file's bytes (for judges that take base64 mp4, or for copying)."""
        f = self._open_file()
        try:
            return f.read()
        finally:
            f.close()

    def _open_file(self) -> IO[bytes]:
        src = self._source
        if isinstance(src, bytes):
            raw: IO[bytes] = io.BytesIO(src)
        elif isinstance(src, str):
            if "://" not in src and not os.path.exists(src):
                raise SparkleDataError("video file not found", path=src)
            if _is_remote(src):  # fetched once, exactly its byte range (see ``RemoteBytesCache``)
                return _open_remote(src, self._offset, self._size, self._storage_options)
            raw = _open_binary(src, self._storage_options)
        elif callable(src):
            raw = src()
        else:
            raw = _Borrowed(src)  # type: ignore[assignment]
            raw.seek(0)
        if self._offset or self._size is not None:
            size = self._size
            if size is None:
                raw.seek(0, io.SEEK_END)
                size = raw.tell() - self._offset
            # no read buffer: a container probe seeks to the end (which empties one) and back; the first
            # block is kept instead, so a member's bytes are read once per use
            return _HeadCachedFile(_RangeFile(raw, self._offset, size))  # type: ignore[return-value]
        return raw

    def _open_container(self) -> tuple[Any, IO[bytes]]:
        held, self._held = self._held, None
        if held is not None:  # the header probe's container: the bytes it read are not read again
            _HELD_PROBES.pop(id(self), None)
            return held
        f = self._open_file()
        self.opens += 1
        try:
            container = av.open(f, mode="r")
        except (av.error.FFmpegError, OSError, ValueError) as e:
            f.close()
            remote = isinstance(self._source, str) and _is_remote(self._source)
            if (
                remote and (hub := hub_error_for_url(e, self._source)) is not None
            ):  # an outage is not bad data
                raise hub from e
            raise SparkleDataError(
                f"not a readable video ({e.__class__.__name__}: {e})", path=self.name
            ) from e
        if not container.streams.video:
            container.close()
            f.close()
            raise SparkleDataError("file has no video stream", path=self.name)
        return container, f

    # -- metadata ------------------------------------------------------------------------------
    @property
    def metadata(self) -> VideoMetadata:
        if self._metadata is None:
            self._metadata = self._read_metadata()
        return self._metadata

    def _read_metadata(self) -> VideoMetadata:
        container, f = self._open_container()
        keep = False
        try:
            metadata, demuxed = self._metadata_of(container, f)
            # a decode usually follows the header read (``num_frames`` then ``get_frames``): keep the
            # container, so the file is read once; never after demuxing (it is no longer at the start)
            keep = not demuxed
            return metadata
        finally:
            if keep:
                self._held = (container, f)
                _hold_probe(self)
            else:
                _close_quietly(container, f)

    def _metadata_of(self, container: Any, f: IO[bytes]) -> tuple[VideoMetadata, bool]:
        """The video stream's metadata, and whether packets had to be demuxed to count its frames."""
        demuxed = False
        stream = container.streams.video[0]
        ctx = stream.codec_context
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        n = int(stream.frames or 0)
        if n <= 0:  # container has no frame count: count packets (demux only, no decode)
            demuxed = True
            n = sum(1 for p in container.demux(stream) if p.size > 0)
        if n <= 0:
            raise SparkleDataError("video stream holds no frames", path=self.name)
        if not ctx.width or not ctx.height:  # e.g. junk that a lenient demuxer still probes as an image
            raise SparkleDataError("video stream has no frame size (not a real video)", path=self.name)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif fps > 0:
            duration = n / fps
        else:
            duration = 0.0
        check_claims(n, fps, duration, int(ctx.width), int(ctx.height), _stream_size(f), self.name)
        return VideoMetadata(
            num_frames=n,
            fps=fps,
            width=int(ctx.width),
            height=int(ctx.height),
            duration=duration,
            codec=str(ctx.name),
            pix_fmt=ctx.pix_fmt,
        ), demuxed

    @property
    def num_frames(self) -> int:
        return self.metadata.num_frames

    def header_frame_count(self) -> int:
        """The frame count the container's index states, read without decoding anything.

        Opening a container normally decodes its first frames to learn the pixel format (about 10 ms for
        a 720p clip, 30 ms for a busy one); callers that need only the count, e.g. the judge's
        truncation check of every result, skip that. Falls back to :attr:`num_frames` (a full header
        read) when the index states no count.
        """
        if self._metadata is not None:
            return self._metadata.num_frames
        f = self._open_file()
        try:
            with av.open(f, mode="r", options={"skip_frame": "all"}) as container:
                n = int(container.streams.video[0].frames or 0) if container.streams.video else 0
        except (av.error.FFmpegError, OSError, ValueError):
            n = 0  # the full read below names what is wrong
        finally:
            f.close()
        return n if n > 0 else self.num_frames

    @property
    def fps(self) -> float:
        return self.metadata.fps

    @property
    def width(self) -> int:
        return self.metadata.width

    @property
    def height(self) -> int:
        return self.metadata.height

    @property
    def duration(self) -> float:
        return self.metadata.duration

    def __len__(self) -> int:
        return self.num_frames

    def __repr__(self) -> str:
        if self._metadata is None:
            return f"VideoReader({self.name!r}, not opened)"
        m = self._metadata
        return f"VideoReader({self.name!r}, {m.num_frames} frames, {m.width}x{m.height} @ {m.fps:g} fps)"

    def _repr_html_(self) -> str:
        """Jupyter display: a small looping ``<video>`` (a few hundred KB at most), built when shown."""
        return clip_html(self)

    # -- decoding ------------------------------------------------------------------------------
    def get_frames(
        self,
        indices: Sequence[int] | np.ndarray | None = None,
        size: tuple[int, int] | None = None,
    ) -> np.ndarray:
        """Decode frames at ``indices`` (any order, repeats allowed) as ``(N, H, W, 3) uint8`` RGB.

        ``size`` is ``(height, width)``: frames are resized during colour conversion. Each distinct
        frame is decoded once; decoding stops at the largest index asked for. Negative indices count
        from the end. ``indices=None`` means every frame.
        """
        if indices is None:
            wanted = list(range(self.num_frames))
        else:
            wanted = [int(i) for i in np.asarray(indices).reshape(-1)]
        if not wanted:
            h, w = size if size is not None else (self.height, self.width)
            return np.zeros((0, h, w, 3), dtype=np.uint8)
        if indices is not None:  # ``None`` asked for ``range(num_frames)``: nothing to resolve or check
            n = self.num_frames
            wanted = [i + n if i < 0 else i for i in wanted]
            bad = [i for i in wanted if i < 0 or i >= n]
            if bad:
                raise IndexError(f"frame indices {bad[:5]} out of range for {n} frames in {self.name}")
        distinct = sorted(set(wanted))
        decoded = self._decode_distinct(distinct, size)
        if len(distinct) == len(wanted) and distinct == wanted:
            return decoded
        position = {idx: k for k, idx in enumerate(distinct)}
        return decoded[[position[i] for i in wanted]]

    def _decode_distinct(self, distinct: list[int], size: tuple[int, int] | None) -> np.ndarray:
        last = distinct[-1]
        slot = {idx: k for k, idx in enumerate(distinct)}
        container, f = self._open_container()
        kwargs: dict[str, Any] = {"format": "rgb24"}
        if size is not None:
            kwargs.update(height=int(size[0]), width=int(size[1]), interpolation=RESIZE_INTERPOLATION)
        index = -1
        try:
            stream = container.streams.video[0]
            stream.thread_type = DECODE_THREAD_TYPE
            h, w = size if size is not None else (stream.codec_context.height, stream.codec_context.width)
            out = _frame_buffer(len(distinct), int(h), int(w), self.name)

            def convert(k: int, frame: av.VideoFrame) -> None:  # runs beside the decoder
                out[k] = frame.to_ndarray(**kwargs)

            futures: list[Future[None]] = []
            with ThreadPoolExecutor(max_workers=1) as pool:
                try:
                    for frame in container.decode(stream):
                        index += 1
                        self.frames_decoded += 1
                        if index in slot:
                            futures.append(pool.submit(convert, slot[index], frame))
                        if index >= last:
                            break
                except av.error.FFmpegError as e:
                    raise SparkleDataError(
                        f"video is corrupt or truncated at frame {index + 1} ({e})", path=self.name
                    ) from e
                finally:
                    for fut in futures:
                        fut.result()
        finally:
            container.close()
            f.close()
        if index < last:
            raise SparkleDataError(
                f"video is truncated: asked for frame {last} but only {index + 1} frames decode",
                path=self.name,
            )
        return out

    def get_frame(self, index: int, size: tuple[int, int] | None = None) -> np.ndarray:
        return self.get_frames([index], size=size)[0]

    def get_frames_uniform(self, num: int, size: tuple[int, int] | None = None) -> np.ndarray:
        """``num`` frames spread evenly over the clip (first and last included)."""
        return self.get_frames(uniform_indices(self.num_frames, num), size=size)

    def iter_frames(self, size: tuple[int, int] | None = None) -> Iterable[np.ndarray]:
        """Yield frames one by one in a single decoding pass (for long clips and streaming writers)."""
        kwargs: dict[str, Any] = {"format": "rgb24"}
        if size is not None:
            kwargs.update(height=int(size[0]), width=int(size[1]), interpolation=RESIZE_INTERPOLATION)
        container, f = self._open_container()
        try:
            stream = container.streams.video[0]
            stream.thread_type = DECODE_THREAD_TYPE
            for frame in container.decode(stream):
                self.frames_decoded += 1
                yield _to_rgb(frame, kwargs)
        except av.error.FFmpegError as e:
            raise SparkleDataError(f"video is corrupt or truncated ({e})", path=self.name) from e
        finally:
            container.close()
            f.close()

    def iter_decoded(self, stop: int | None = None) -> Iterable[av.VideoFrame]:
        """Yield PyAV frames of one decoding pass (at most ``stop``), still in the codec's pixel format.

        For callers that convert each frame more than one way (e.g. a small RGB frame plus a larger grey
        one for some frames): PyAV's ``to_ndarray(format=..., width=..., height=...)`` scales and converts
        in a single swscale pass, with no full-size RGB frame in between.
        """
        container, f = self._open_container()
        try:
            stream = container.streams.video[0]
            stream.thread_type = DECODE_THREAD_TYPE
            for index, frame in enumerate(container.decode(stream)):
                if stop is not None and index >= stop:
                    break
                self.frames_decoded += 1
                yield frame
        except av.error.FFmpegError as e:
            raise SparkleDataError(f"video is corrupt or truncated ({e})", path=self.name) from e
        finally:
            container.close()
            f.close()

    def to_tensor(
        self,
        indices: Sequence[int] | None = None,
        size: tuple[int, int] | None = None,
        value_range: tuple[float, float] = (0.0, 1.0),
    ) -> torch.Tensor:
        """Frames as a float ``(C, T, H, W)`` tensor scaled to ``value_range``."""
        frames = self.get_frames(indices, size=size)
        try:
            return frames_to_tensor(frames, value_range=value_range)
        except (MemoryError, RuntimeError) as e:
            if isinstance(e, RuntimeError) and "memory" not in str(e).lower():
                raise
            raise SparkleDataError(
                f"cannot allocate a float tensor of {frames.size * 4} bytes for {frames.shape[0]} frames "
                f"({e.__class__.__name__}): ask for fewer frames or a smaller size",
                path=self.name,
            ) from e


def _stream_size(f: IO[bytes]) -> int | None:
    """The opened file's size in bytes (its position is kept), or ``None`` when it cannot seek."""
    try:
        pos = f.tell()
        end = f.seek(0, io.SEEK_END)
        f.seek(pos)
        return int(end)
    except (OSError, ValueError):
        return None


def check_claims(
    num_frames: int, fps: float, duration: float, width: int, height: int, file_bytes: int | None, name: str
) -> None:
    """Refuse container claims that cannot be true, before anything is sized from them.

    Every frame takes at least one byte of the file, a clip lasting ``duration`` seconds at ``fps``
    holds about ``duration * fps`` frames, and no codec decodes a side beyond ``MAX_FRAME_SIDE``; a
    header that says otherwise is damaged (or hostile) and would make ``get_frames`` allocate wildly.
    """
    if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE:
        raise SparkleDataError(
            f"the container claims {width}x{height} frames, beyond any codec's limit ({MAX_FRAME_SIDE})",
            path=name,
        )
    if file_bytes is not None and num_frames > file_bytes:
        raise SparkleDataError(
            f"the container claims {num_frames} frames in a {file_bytes}-byte file (each frame takes at "
            "least a byte): its header is damaged",
            path=name,
        )
    if fps > 0 and duration > 0 and num_frames > 2 * duration * fps + 16:
        raise SparkleDataError(
            f"the container claims {num_frames} frames in {duration:g} s at {fps:g} fps (about "
            f"{round(duration * fps)} frames): its header is damaged",
            path=name,
        )


def _frame_buffer(count: int, height: int, width: int, name: str) -> np.ndarray:
    """``np.empty`` for decoded frames; running out of memory is named (file and size), never bare."""
    try:
        return np.empty((count, height, width, 3), dtype=np.uint8)
    except (MemoryError, ValueError) as e:
        raise SparkleDataError(
            f"cannot allocate {count * height * width * 3} bytes for {count} frames of {width}x{height} "
            f"({e.__class__.__name__}): ask for fewer frames or a smaller size",
            path=name,
        ) from e


def _to_rgb(frame: av.VideoFrame, kwargs: dict[str, Any]) -> np.ndarray:
    return frame.to_ndarray(**kwargs)


# -- sampling and sizing -------------------------------------------------------------------------
def uniform_indices(num_frames: int, num: int) -> np.ndarray:
    """``num`` indices spread evenly over ``[0, num_frames)``, first and last included."""
    if num_frames <= 0:
        raise ValueError("num_frames must be positive")
    if num <= 0:
        raise ValueError("num must be positive")
    if num == 1:
        return np.zeros(1, dtype=np.int64)
    return np.round(np.linspace(0, num_frames - 1, num)).astype(np.int64)


def model_frame_size(
    height: int,
    width: int,
    max_pixels: int = MODEL_MAX_PIXELS,
    multiple: int = MODEL_SIZE_MULTIPLE,
) -> tuple[int, int]:
    """The model's working size: shrink to fit ``max_pixels`` keeping aspect, then floor to ``multiple``.

    1280x720 sources give 1280x704, as the released model's outputs are. The arithmetic (divide by
    ``sqrt(area / max_pixels)``, truncate, floor) is the released inference code's, so sizes agree with
    it to the pixel, including the float edge cases (1000x1000 -> 928x928).
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"bad frame size {height}x{width}")
    if height * width > max_pixels:
        scale = math.sqrt(height * width / max_pixels)
        height, width = int(height / scale), int(width / scale)
    h = max(multiple, height // multiple * multiple)
    w = max(multiple, width // multiple * multiple)
    return h, w


def model_num_frames(num_frames: int, max_frames: int = MODEL_MAX_FRAMES) -> int:
    """Largest ``4k+1`` frame count not above ``min(num_frames, max_frames)`` (the Wan VAE's rule)."""
    n = min(num_frames, max_frames)
    if n < 1:
        raise ValueError("video has no frames")
    return (n - 1) // 4 * 4 + 1


def frames_to_tensor(frames: np.ndarray, value_range: tuple[float, float] = (0.0, 1.0)) -> torch.Tensor:
    """``(T, H, W, 3) uint8`` frames -> float ``(C, T, H, W)`` tensor in ``value_range``."""
    import torch

    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected (T, H, W, 3) frames, got shape {arr.shape}")
    lo, hi = value_range
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(3, 0, 1, 2).float()
    return t.mul_((hi - lo) / 255.0).add_(lo)


def tensor_to_frames(tensor: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """Inverse of :func:`frames_to_tensor`: ``(C, T, H, W)`` float -> ``(T, H, W, 3) uint8``."""
    import torch

    lo, hi = value_range
    t = (tensor.detach().float().cpu() - lo) / (hi - lo)
    return (t.clamp(0, 1) * 255).round().to(dtype=torch.uint8).permute(1, 2, 3, 0).numpy()


# -- writing -------------------------------------------------------------------------------------
def write_video(
    frames: np.ndarray | Iterable[np.ndarray],
    path: str | os.PathLike | IO[bytes],
    fps: float = 16,
    *,
    crf: int = 18,
    preset: str = "medium",
    codec: str = "libx264",
    options: dict[str, str] | None = None,
) -> None:
    """Encode ``(T, H, W, 3) uint8`` RGB frames as H.264/yuv420p mp4.

    ``options`` are extra encoder options, e.g. ``{"threads": "1", "x264-params": "mbtree=0"}``, with
    which x264 gives the same bytes in every run (by default it does not always, on small frames).

    Odd sizes are padded by one pixel (yuv420p needs even sizes). When ``path`` is a filesystem path
    the file is written to a temporary name and renamed, so a killed process never leaves a
    half-written mp4 behind, and an OS error (a full disk) is a ``SparkleWriteError`` naming ``path``.
    """
    from fractions import Fraction

    tmp: str | None = None
    target: str | IO[bytes]
    if isinstance(path, (str, os.PathLike)):
        final = os.fspath(path)
        with os_errors(final):
            Path(final).parent.mkdir(parents=True, exist_ok=True)
        tmp = f"{final}.partial-{os.getpid()}-{threading.get_ident()}.mp4"
        target = tmp
    else:
        target = path
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with (
            os_errors(final) if tmp is not None else contextlib.nullcontext(),
            av.open(target, mode="w", format="mp4") as container,
        ):
            stream = None
            for frame in frames:
                arr = np.ascontiguousarray(frame)
                if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
                    raise ValueError(f"frames must be (H, W, 3) uint8, got {arr.shape} {arr.dtype}")
                h, w = arr.shape[:2]
                if h % 2 or w % 2:
                    arr = np.pad(arr, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if stream is None:
                    stream = container.add_stream(codec, rate=rate)
                    stream.width, stream.height = arr.shape[1], arr.shape[0]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf), "preset": preset}
                    if options:
                        stream.options = {**stream.options, **options}
                elif (arr.shape[1], arr.shape[0]) != (stream.width, stream.height):
                    raise ValueError("all frames must have the same size")
                for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    container.mux(packet)
            if stream is None:
                raise ValueError("no frames to write")
            for packet in stream.encode():
                container.mux(packet)
        if tmp is not None:
            with os_errors(final):
                os.replace(tmp, final)
            tmp = None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def as_video_reader(video: VideoSourceLike) -> VideoReader:
    """Wrap anything video-like (path, bytes, file object) in a :class:`VideoReader`."""
    if isinstance(video, VideoReader):
        return video
    return VideoReader(video)


# -- notebooks ------------------------------------------------------------------------------------
def _even_width(reader: VideoReader, height: int) -> int:
    return max(2, round(reader.width * height / max(1, reader.height)) // 2 * 2)


def clip_html(
    reader: VideoReader,
    height: int = HTML_HEIGHT,
    max_frames: int = HTML_MAX_FRAMES,
    max_bytes: int = HTML_MAX_BYTES,
) -> str:
    """A small, self-contained ``<video>`` (H.264 in a data URI) of ``reader``, at most ``max_bytes`` of payload.

    The clip is re-encoded small (``height`` pixels, at most ``max_frames`` frames spread over the clip),
    so the notebook stays light whatever the source size. If even that is over the bound, a still strip
    of four frames (PNG) is shown instead, and failing that, the reader's description.
    """
    import io

    try:
        frames_wanted = min(reader.num_frames, max_frames)
        for h in (height, height // 2):
            w = _even_width(reader, h)
            frames = reader.get_frames(uniform_indices(reader.num_frames, frames_wanted), size=(h, w))
            fps = (reader.fps or 16) * frames_wanted / max(1, reader.num_frames)
            buf = io.BytesIO()
            write_video(frames, buf, fps=max(1.0, fps), crf=30, preset="veryfast")
            if inline_size(buf.getvalue()) <= max_bytes:
                return video_tag(buf.getvalue(), w, h, reader.name)
        strip = np.concatenate(list(frames[uniform_indices(len(frames), min(4, len(frames)))]), axis=1)
        from PIL import Image

        png = io.BytesIO()
        Image.fromarray(strip).save(png, format="PNG", optimize=True)
        if inline_size(png.getvalue()) <= max_bytes:
            return image_tag(png.getvalue(), "image/png", reader.name)
    except Exception as e:  # a display must never raise: show what went wrong instead
        return text_block(repr(reader), str(e))
    return text_block(repr(reader))
