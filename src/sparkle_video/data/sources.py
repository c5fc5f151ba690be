"""Where a dataset lives: a local folder, any fsspec URL, or a Hugging Face Hub repo.

Every read goes through one fsspec filesystem, so local folders, ``memory://``, ``file://``, ``s3://``
and ``hf://`` behave the same. Hub repos are either downloaded (only the files a selection needs, see
``sparkle_video.data.hub``) or streamed through ``HfFileSystem`` at a pinned commit. On remote roots a failed
request raises ``SparkleHubError`` instead of looking like a missing file.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import fsspec

from ..errors import SparkleDataError, SparkleHubError
from .layout import SHARD_RE
from .shards import TarMember, check_member_header
from .transport import hub_error, hub_error_for_url

T = TypeVar("T")

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: An ``hf://`` URL pinned to a commit: its content never changes, so small files are read once.
PINNED_URL_RE = re.compile(r"^hf://datasets/[^/@]+/[^/@]+@[0-9a-f]{40}/")
PINNED_TEXT_MAX_BYTES = 64 << 20
_PINNED_TEXT: dict[str, bytes] = {}


@dataclass
class DataRoot:
    """A dataset root on some fsspec filesystem, addressed with repo-relative POSIX paths."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    #: set by a Hub download that fetched only some samples (``limit``): the ids it holds
    selected_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.fs, self.path = fsspec.core.url_to_fs(self.url, **self.storage_options)
        self.path = self.path.rstrip("/") or self.path

    @property
    def is_local(self) -> bool:
        protocol = self.fs.protocol
        return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))

    def full(self, rel: str) -> str:
        return posixpath.join(self.path, rel) if self.path else rel

    def uri(self, rel: str) -> str:
        """A URL that ``fsspec.open`` (and so ``VideoReader``) can open from any process."""
        full = self.full(rel)
        if self.is_local:
            return full
        return self.fs.unstrip_protocol(full)

    def remote(self, rel: str, call: Callable[[], T]) -> T:
        """Run ``call``; on a remote root, turn a network/server failure into ``SparkleHubError``."""
        if self.is_local:
            return call()
        try:
            return call()
        except (SparkleDataError, SparkleHubError):
            raise
        except Exception as e:
            err = hub_error_for_url(e, self.uri(rel))
            if err is None:
                raise
            raise err from e

    @property
    def is_pinned(self) -> bool:
        """A Hub snapshot at a commit: immutable, so there is nothing to re-check."""
        return bool(PINNED_URL_RE.match(self.uri("x")))

    def stamp(self, rel: str) -> str:
        """What a file is now (see :func:`file_stamp`); ``""`` for a pinned Hub snapshot."""
        if self.is_pinned:
            return ""
        if self.is_local:
            return file_stamp(self.full(rel))
        return self.remote(rel, lambda: f"size={int(self.fs.size(self.full(rel)))}")

    def exists(self, rel: str) -> bool:
        if self.is_local:
            return self.fs.exists(self.full(rel))
        return self.remote(rel, lambda: self._remote_info(rel) is not None)

    def isdir(self, rel: str) -> bool:
        if self.is_local:
            return self.fs.isdir(self.full(rel))
        return self.remote(rel, lambda: (self._remote_info(rel) or {}).get("type") == "directory")

    def _remote_info(self, rel: str) -> dict | None:
        """``fs.info`` with "not found" as ``None``; other failures propagate (``exists`` hides them)."""
        try:
            return self.fs.info(self.full(rel))
        except FileNotFoundError as e:
            if e.__cause__ is not None and hub_error(e.__cause__) is not None:  # missing repo/revision
                raise
            return None

    def open(self, rel: str, mode: str = "rb", **kwargs: Any) -> IO:
        return self.remote(rel, lambda: self.fs.open(self.full(rel), mode, **kwargs))

    def read_text(self, rel: str) -> str:
        url = self.uri(rel)
        data = _PINNED_TEXT.get(url)
        if data is None:
            with self.open(rel, "rb") as f:
                data = f.read()
            if PINNED_URL_RE.match(url) and len(data) <= PINNED_TEXT_MAX_BYTES:  # immutable: read it once
                _PINNED_TEXT[url] = data
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise SparkleDataError(f"not UTF-8 text ({e})", path=self.uri(rel)) from e

    def listdir(self, rel: str = "") -> list[str]:
        """Base names of the entries in a folder (empty when it does not exist)."""
        return sorted(self.list_sizes(rel, files_only=False))

    def list_sizes(self, rel: str = "", files_only: bool = True) -> dict[str, int]:
        """``name -> size`` of a folder's entries, in one listing (empty when it does not exist)."""
        full = self.full(rel) if rel else self.path

        def ls() -> list:
            try:
                return self.fs.ls(full, detail=True)
            except (FileNotFoundError, NotADirectoryError) as e:
                if not self.is_local and e.__cause__ is not None and hub_error(e.__cause__) is not None:
                    raise
                return []

        entries = self.remote(rel, ls)
        return {
            posixpath.basename(str(e["name"]).rstrip("/")): int(e.get("size") or 0)
            for e in entries
            if not (files_only and e.get("type") == "directory")
        }

    def shards(self, theme: str, kind: str, folder: str = "") -> list[str]:
        """Repo-relative paths of ``{theme}_{kind}_video_partXX.tar``, in part order."""
        found = []
        for name in self.listdir(folder):
            m = SHARD_RE.match(name)
            if m and m["theme"] == theme and m["kind"] == kind:
                found.append((int(m["part"]), posixpath.join(folder, name) if folder else name))
        return [p for _, p in sorted(found)]


def looks_like_repo_id(source: str) -> bool:
    return bool(REPO_ID_RE.match(source)) and not os.path.exists(source)


def hub_stream_url(repo_id: str, revision: str | None = None) -> str:
    """``hf://datasets/{repo}[@rev]``: the ``HfFileSystem`` URL used for streaming from the Hub."""
    rev = f"@{revision}" if revision else ""
    return f"hf://datasets/{repo_id}{rev}"


def open_root(source: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> DataRoot:
    """A ``DataRoot`` for a local folder or URL, with a clear error when it does not exist."""
    src = os.fspath(source)
    if "://" not in src:
        if not os.path.isdir(src):
            raise SparkleDataError("dataset folder not found", path=src)
        src = os.path.abspath(src)
    root = DataRoot(src, dict(storage_options or {}))
    if "://" in src and not root.fs.exists(root.path):
        raise SparkleDataError("dataset location not found", path=src)
    return root


# -- files that must not change under a reader ----------------------------------------------------
def file_stamp(path: str) -> str:
    """``size=..;mtime_ns=..;ino=..`` of a local file: recorded when it is indexed, compared on each open."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise SparkleDataError(f"file cannot be read ({e.strerror or e})", path=path) from e
    return _stat_stamp(st)


def _stat_stamp(st: os.stat_result) -> str:
    return f"size={st.st_size};mtime_ns={st.st_mtime_ns};ino={st.st_ino}"


def changed_error(path: str, was: str, now: str, when: str = "since it was indexed") -> SparkleDataError:
    """The one error for a file that is no longer what the index saw (its bytes may be another sample's)."""
    return SparkleDataError(
        f"file changed {when} (was {was}, now {now}): its byte ranges may hold other bytes; "
        "load the dataset again",
        path=path,
    )


def check_stamp(path: str, stamp: str, when: str = "since it was indexed") -> None:
    """Raise when a local file's stamp differs from ``stamp`` (an empty stamp checks nothing)."""
    if stamp:
        now = file_stamp(path)
        if now != stamp:
            raise changed_error(path, stamp, now, when)


class FileCheck:
    """Checks that a local file (or a tar member's shard) is still what was indexed.

    ``VideoReader``s of indexed rows run it on every open: the file's size, mtime and inode against the
    stamp taken when indexing, and for a tar member its header checksum (one 512-byte read beside the
    member's own bytes). Picklable, so DataLoader workers check too.
    """

    def __init__(self, path: str, stamp: str, member: TarMember | None = None):
        self.path = path
        self.stamp = stamp
        self.member = member

    def verify(self) -> None:
        try:
            f = open(self.path, "rb")  # noqa: SIM115 - closed by the ``with`` below; only the open may fail here
        except FileNotFoundError as e:
            raise SparkleDataError("file is gone since it was indexed", path=self.path) from e
        with f:
            now = _stat_stamp(os.fstat(f.fileno()))
            if self.stamp and now != self.stamp:
                raise changed_error(self.path, self.stamp, now)
            if self.member is not None:
                check_member_header(f, self.member, self.path)

    def __repr__(self) -> str:
        return f"FileCheck({self.path!r})"
