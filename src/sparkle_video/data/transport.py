"""Hub transport: a repo pinned to one commit, downloads at that commit, ranged reads of remote tars.

This is the lower half of the Hub support: it knows how to fetch bytes (and how to turn network and
server failures into :class:`SparkleHubError` naming repo, revision and file, so they are never mistaken
for bad samples under ``errors="skip"``), not which files a selection needs (``hub``, above it).
"""

from __future__ import annotations

import io
import logging
import os
import re
import tarfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import SparkleDataError, SparkleHubError
from .shards import check_member_name

logger = logging.getLogger("sparkle_video")

#: ``hf://datasets/{org}/{name}[@{revision}][/{path}]``
HF_URL_RE = re.compile(r"^hf://datasets/(?P<repo>[^/@]+/[^/@]+)(?:@(?P<rev>[^/]+))?(?:/(?P<path>.*))?$")
#: Parallel file downloads (the same default as ``snapshot_download``).
DOWNLOAD_WORKERS = 8
#: What ``huggingface_hub`` raises when a Hub reply is not the JSON it expects (HTML from a gateway, a
#: dict where a list belongs, a missing field).
MALFORMED_REPLY_ERRORS = (ValueError, TypeError, KeyError, AttributeError)


# -- errors ---------------------------------------------------------------------------------------
def describe_url(url: str) -> tuple[str | None, str | None, str]:
    """``(repo_id, revision, path_in_repo)`` of an ``hf://datasets/...`` URL; ``(None, None, url)`` otherwise."""
    m = HF_URL_RE.match(url)
    if not m:
        return None, None, url
    from urllib.parse import unquote

    return m["repo"], unquote(m["rev"]) if m["rev"] else None, m["path"] or ""


def hub_error(
    exc: BaseException, *, repo_id: str | None = None, revision: str | None = None, path: str | None = None
) -> SparkleHubError | None:
    """The :class:`SparkleHubError` an exception stands for, or ``None`` when it is not a remote failure.

    Walks the exception's cause chain, so wrappers (``FileNotFoundError`` from ``HfFileSystem``, PyAV
    re-raising a read error, "not in the cache" raised because a request failed) are seen through; the
    deepest recognised cause names the failure (e.g. the HTTP 500 behind a cache miss).
    """
    if isinstance(exc, SparkleHubError):
        return exc
    seen: set[int] = set()
    best: tuple[int, str] | None = None
    err: BaseException | None = exc
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        found = _hub_message(err)
        if found is not None and (best is None or found[0] > best[0]):
            best = found
        err = err.__cause__ or err.__context__
    if best is None:
        return None
    return SparkleHubError(best[1], repo_id=repo_id, revision=revision, path=path)


def api_endpoint(repo_id: str, revision: str | None = None, op: str = "") -> str:
    """The Hub API address ``huggingface_hub`` asks for a dataset's info (``op=""``) or tree (``"tree"``)."""
    from urllib.parse import quote

    from huggingface_hub import constants

    base = f"{constants.ENDPOINT.rstrip('/')}/api/datasets/{repo_id}"
    if op:
        return f"{base}/{op}/{quote(revision or constants.DEFAULT_REVISION, safe='')}"
    return f"{base}/revision/{quote(revision, safe='')}" if revision else base


def malformed_reply(
    exc: BaseException, what: str, endpoint: str, repo_id: str, revision: str | None
) -> SparkleHubError:
    """The error for a Hub reply that is not what the API promises (names the endpoint, not just a
    ``JSONDecodeError`` deep inside ``huggingface_hub``)."""
    detail = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return SparkleHubError(
        f"the Hub answered {endpoint} with a malformed {what} ({detail})", repo_id=repo_id, revision=revision
    )


def _other_host(err: BaseException) -> str | None:
    """The host a failed request went to when it is not the Hub endpoint's (a redirect led there)."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    try:
        host = err.request.url.host  # type: ignore[attr-defined]
    except (AttributeError, RuntimeError):  # no request attached to this error
        return None
    hub_host = urlsplit(constants.ENDPOINT).hostname
    return host if host and hub_host and host != hub_host else None


def _hub_message(err: BaseException) -> tuple[int, str] | None:
    """``(specificity, message)`` for a remote failure: an HTTP status or client error (2) says more
    than a cache miss or a bare socket error (1) that it caused or was caused by."""
    try:
        import httpx2 as httpx  # the HTTP client huggingface_hub 2.x uses
    except ImportError:  # pragma: no cover - older huggingface_hub
        import httpx  # type: ignore[no-redef]
    from huggingface_hub import errors as hf

    name = f"{err.__class__.__name__}: {err}".splitlines()[0][:200]
    if isinstance(err, hf.RevisionNotFoundError):
        return 2, "revision not found on the Hub"
    if isinstance(err, hf.RepositoryNotFoundError):  # also gated repos without access
        return 2, "dataset repository not found on the Hub (or private/gated without a valid token)"
    if isinstance(err, hf.RevisionResolutionError):
        return 1, "the Hub cannot be reached and this revision is not in the local cache"
    if isinstance(err, hf.OfflineModeIsEnabled):
        return 1, "offline mode (HF_HUB_OFFLINE=1) and the file is not in the local cache"
    if isinstance(err, hf.LocalEntryNotFoundError):
        return 1, "not in the local cache and the Hub cannot be reached"
    if isinstance(err, hf.HfHubHTTPError):
        status = err.response.status_code if err.response is not None else "?"
        location = err.response.headers.get("location") if err.response is not None else None
        if isinstance(status, int) and 300 <= status < 400 and location:
            return (
                2,
                f"the Hub answered with a redirect (HTTP {status}) to {location}, which was not followed",
            )
        return 2, f"the Hub answered HTTP {status} ({name})"
    if isinstance(err, httpx.TransportError) and (host := _other_host(err)) is not None:
        return 3, f"the Hub redirected to another host, {host}, and that host failed ({name})"
    if isinstance(err, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return 2, f"the connection to the Hub dropped while reading ({name})"
    if isinstance(err, httpx.TimeoutException):
        return 2, f"the Hub did not answer in time ({name})"
    if isinstance(err, httpx.TransportError):
        return 2, f"the Hub cannot be reached ({name})"
    if isinstance(err, (ConnectionError, TimeoutError)):
        return 1, f"the remote store cannot be reached ({name})"
    if isinstance(err, OSError) and "Consistency check failed" in str(err):
        return 1, f"a download was cut short ({name})"
    return None


@contextmanager
def hub_errors(
    repo_id: str | None,
    revision: str | None = None,
    path: str | None = None,
    *,
    listing: str | None = None,
) -> Iterator[None]:
    """Turn remote failures raised inside the block into :class:`SparkleHubError`.

    With ``listing`` (the endpoint the block lists the repo from), a reply ``huggingface_hub`` cannot
    parse is one too, naming that endpoint.
    """
    try:
        yield
    except (SparkleDataError, SparkleHubError):
        raise
    except Exception as e:
        err = hub_error(e, repo_id=repo_id, revision=revision, path=path)
        if err is None and listing is not None and repo_id and isinstance(e, MALFORMED_REPLY_ERRORS):
            err = malformed_reply(e, "tree listing", listing, repo_id, revision)
        if err is None:
            raise
        raise err from e


def hub_error_for_url(exc: BaseException, url: str) -> SparkleHubError | None:
    repo_id, revision, path = describe_url(url)
    return hub_error(exc, repo_id=repo_id, revision=revision, path=path if repo_id else url)


# -- revision -------------------------------------------------------------------------------------
@dataclass
class HubRepo:
    """A dataset repo pinned to one commit; ``offline`` when it was resolved from the local cache."""

    repo_id: str
    revision: str | None
    commit: str
    offline: bool
    token: str | bool | None = None
    cache_dir: str | None = None
    files: dict[str, int] = field(default_factory=dict)  # repo path -> size, at ``commit``

    @property
    def stream_url(self) -> str:
        return f"hf://datasets/{self.repo_id}@{self.commit}"


def _cache_root(cache_dir: str | None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE).expanduser().resolve()


def _write_ref(repo_id: str, revision: str, commit: str, cache_dir: str | None) -> None:
    """Remember ``revision -> commit`` in the cache's ``refs/`` (what lets a later offline load find it)."""
    from huggingface_hub.file_download import repo_folder_name

    ref = _cache_root(cache_dir) / repo_folder_name(repo_id=repo_id, repo_type="dataset") / "refs" / revision
    try:
        ref.parent.mkdir(parents=True, exist_ok=True)
        if not ref.is_file() or ref.read_text().strip() != commit:
            tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
            tmp.write_text(commit)
            os.replace(tmp, ref)
    except OSError as e:  # a read-only cache only costs the offline fallback
        logger.debug("could not record %s@%s in the cache: %s", repo_id, revision, e)


def resolve_repo(
    repo_id: str, revision: str | None = None, token: str | bool | None = None, cache_dir: str | None = None
) -> HubRepo:
    """Pin ``revision`` (default branch when ``None``) to a commit: one request, or the cache when offline."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub import errors as hf

    api = HfApi(token=token)
    reason: str | None = None
    if constants.is_offline_mode():
        reason = "HF_HUB_OFFLINE=1"
    else:
        try:
            info = api.dataset_info(
                repo_id, revision=revision, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT
            )
        except (hf.RepositoryNotFoundError, hf.RevisionNotFoundError) as e:
            raise hub_error(e, repo_id=repo_id, revision=revision) from None  # type: ignore[misc]
        except Exception as e:
            err = hub_error(e, repo_id=repo_id, revision=revision)
            if err is None and isinstance(e, MALFORMED_REPLY_ERRORS):
                shown = revision or constants.DEFAULT_REVISION
                raise malformed_reply(e, "repo info", api_endpoint(repo_id, revision), repo_id, shown) from e
            status = getattr(getattr(e, "response", None), "status_code", 500) or 500
            if err is None or (isinstance(e, hf.HfHubHTTPError) and status < 500 and status != 429):
                raise err or e from e
            reason = err.reason
        else:
            if not isinstance(info.sha, str) or not info.sha:
                raise malformed_reply(
                    ValueError("no commit sha"),
                    "repo info",
                    api_endpoint(repo_id, revision),
                    repo_id,
                    revision or constants.DEFAULT_REVISION,
                )
            _write_ref(repo_id, revision or constants.DEFAULT_REVISION, info.sha, cache_dir)
            return HubRepo(repo_id, revision, info.sha, False, token, cache_dir)
    try:
        resolved = api.resolve_revision(
            repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir, local_files_only=True
        )
    except hf.RevisionResolutionError as e:
        raise SparkleHubError(
            f"{reason}, and this dataset is not in the local cache ({_cache_root(cache_dir)})",
            repo_id=repo_id,
            revision=revision,
        ) from e
    logger.warning("%s: loading %s from the local cache (commit %s)", reason, repo_id, resolved.resolved[:12])
    return HubRepo(repo_id, revision, resolved.resolved, True, token, cache_dir)


# -- files ----------------------------------------------------------------------------------------


def download_index(repo: HubRepo, patterns: Sequence[str]) -> str:
    """Download the index files at the pinned commit (listing the tree once); return the snapshot folder."""
    from huggingface_hub import errors as hf
    from huggingface_hub import get_cached_repo_tree, snapshot_download

    with hub_errors(repo.repo_id, repo.commit, listing=api_endpoint(repo.repo_id, repo.commit, "tree")):
        folder = snapshot_download(
            repo.repo_id,
            repo_type="dataset",
            revision=repo.commit,
            allow_patterns=list(patterns),
            token=repo.token,
            cache_dir=repo.cache_dir,
            local_files_only=repo.offline,
        )
    try:
        tree = get_cached_repo_tree(
            repo.repo_id, repo_type="dataset", revision=repo.commit, cache_dir=repo.cache_dir
        )
        repo.files = {f.path: int(f.size or 0) for f in tree}
    except hf.CachedRepoTreeNotFoundError:  # cache filled by another tool: what is on disk is all we know
        base = Path(folder)
        repo.files = {
            p.relative_to(base).as_posix(): p.stat().st_size for p in base.rglob("*") if p.is_file()
        }
    return str(folder)


def download_files(repo: HubRepo, paths: Sequence[str], desc: str = "downloading") -> None:
    """Fetch ``paths`` into the snapshot folder (cached files are not fetched again), in parallel."""
    from huggingface_hub import errors as hf
    from huggingface_hub import hf_hub_download
    from tqdm.auto import tqdm

    missing: list[str] = []

    def fetch(path: str) -> None:
        try:
            with hub_errors(repo.repo_id, repo.commit, path):
                hf_hub_download(
                    repo.repo_id,
                    path,
                    repo_type="dataset",
                    revision=repo.commit,
                    token=repo.token,
                    cache_dir=repo.cache_dir,
                    local_files_only=repo.offline,
                )
        except SparkleHubError as e:
            if repo.offline and isinstance(e.__cause__, hf.LocalEntryNotFoundError):
                missing.append(path)
                return
            raise

    if not paths:
        return
    with ThreadPoolExecutor(max_workers=DOWNLOAD_WORKERS) as pool:
        for _ in tqdm(pool.map(fetch, paths), total=len(paths), desc=desc, unit="file", leave=False):
            pass
    if missing:
        raise SparkleHubError(
            f"offline, and {len(missing)} needed files are not in the local cache (first: {sorted(missing)[0]})",
            repo_id=repo.repo_id,
            revision=repo.commit,
        )


def first_member(repo: HubRepo, shard: str) -> str | None:
    """The first member name of a remote tar shard, from one 1.5 KiB range request (header + pax)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    url = hf_hub_url(repo.repo_id, shard, repo_type="dataset", revision=repo.commit)
    with hub_errors(repo.repo_id, repo.commit, shard):
        headers = {**build_hf_headers(token=repo.token), "Range": f"bytes=0-{3 * tarfile.BLOCKSIZE - 1}"}
        response = get_session().get(url, headers=headers)
        hf_raise_for_status(response)
    try:
        with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:") as tf:
            info = tf.next()
    except tarfile.TarError as e:
        raise SparkleDataError(
            f"not a readable uncompressed tar ({e})", path=f"{repo.stream_url}/{shard}"
        ) from e
    return info.name if info is not None else None


# -- remote tar members ---------------------------------------------------------------------------
class WindowReader(io.RawIOBase):
    """A seekable view of a remote file that fetches exactly what is asked for, one window at a time.

    ``fetch(pos, n)`` loads ``[pos, pos+n)`` in one ranged request; reads inside the window are served
    from memory, and a read outside it fetches at least ``min_fetch`` bytes. Nothing past the end of
    the file or of what was asked for is requested, which keeps sparse reads (``limit``, ``ids``) at
    about the bytes they need.
    """

    def __init__(self, raw: Any, size: int, min_fetch: int = 1024):
        self._raw = raw
        self._size = size
        self._min = min_fetch
        self._pos = 0
        self._start = 0
        self._buf = b""
        self.requests = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def fetch(self, pos: int, n: int) -> None:
        end = min(self._size, pos + n)
        if self._start <= pos and end <= self._start + len(self._buf):
            return
        self._raw.seek(pos)
        self._buf = self._raw.read(end - pos) if end > pos else b""
        self._start = pos
        self.requests += 1

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = self._size - self._pos
        n = min(n, self._size - self._pos)
        if n <= 0:
            return b""
        if not (self._start <= self._pos and self._pos + n <= self._start + len(self._buf)):
            self.fetch(self._pos, max(n, self._min))
        off = self._pos - self._start
        out = self._buf[off : off + n]
        self._pos += len(out)
        return out

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer)[: len(data)] = data
        return len(data)


def iter_remote_tar(raw: Any, size: int, url: str, wanted: set[str] | None) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` of the regular members of a remote uncompressed tar, in order.

    Unwanted members are seeked over (their data is never fetched); a wanted member costs one ranged
    request for its data plus the next header. Members found are removed from ``wanted``, and once it
    is empty nothing more is read (so later shards of the same stream cost nothing). Damage raises
    ``SparkleDataError`` naming the shard; a network or server failure raises ``SparkleHubError``.
    """
    if wanted is not None and not wanted:
        return
    reader = WindowReader(raw, size, min_fetch=3 * tarfile.BLOCKSIZE)
    try:
        with tarfile.open(fileobj=reader, mode="r:") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                if info.offset_data + info.size > size:
                    raise SparkleDataError(
                        f"tar member {info.name!r} runs past the end of the file ({size} bytes): the shard is "
                        "truncated or its header is damaged",
                        path=url,
                    )
                name = check_member_name(info.name, url)
                if wanted is not None and name not in wanted:
                    continue
                padded = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                # one request: the data and the next header (with a pax header in front of it)
                reader.fetch(info.offset_data, padded + 3 * tarfile.BLOCKSIZE)
                reader.seek(info.offset_data)
                data = reader.read(info.size)
                reader.seek(info.offset_data + padded)
                if wanted is not None:
                    wanted.discard(name)
                yield name, data
                if wanted is not None and not wanted:  # every member asked for is found: stop reading
                    return
    except (tarfile.TarError, EOFError) as e:
        raise SparkleDataError(f"not a readable uncompressed tar ({e})", path=url) from e
    except (SparkleDataError, SparkleHubError):
        raise
    except Exception as e:
        err = hub_error_for_url(e, url)
        if err is None:
            raise
        raise err from e
