"""Reading official-style tar shards without extracting them.

Two access patterns: ``index_tar`` scans member headers of a seekable file (seeking over the data, so
only headers are read) and returns byte ranges that a ``VideoReader`` opens directly; ``iter_tar``
reads members in stream order for streaming, never seeking.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from ..errors import SparkleDataError
from .layout import safe_relpath

#: A streamed member is read into memory: a header claiming more than this is damage, not a video.
MAX_MEMBER_BYTES = 1 << 34  # 16 GiB


@dataclass(frozen=True)
class TarMember:
    """Where one member's bytes live inside an uncompressed tar."""

    name: str
    offset: int
    size: int


def check_member_name(name: str, shard: str) -> str:
    """Normalise a member name, rejecting ``..`` and absolute names (they could escape on extraction)."""
    try:
        return safe_relpath(name)
    except ValueError as e:
        raise SparkleDataError(f"unsafe tar member name: {e}", path=shard) from e


def _file_size(fileobj: IO[bytes]) -> int:
    pos = fileobj.tell()
    end = fileobj.seek(0, io.SEEK_END)
    fileobj.seek(pos)
    return end


def _past_end(info: tarfile.TarInfo, end: int, shard: str) -> SparkleDataError:
    return SparkleDataError(
        f"tar member {info.name!r} at byte {info.offset} claims {info.size} bytes, past the end of the shard "
        f"({end} bytes): the shard is truncated or its header is damaged",
        path=shard,
    )


def scan_tar(fileobj: IO[bytes], shard: str) -> tuple[dict[str, TarMember], SparkleDataError | None]:
    """Index a seekable uncompressed tar up to its first damage.

    Returns the intact members found before the damage (each one's bytes lie wholly inside the file) and
    the damage as a ``SparkleDataError`` naming the shard, or ``None`` for a sound tar. Damage is a
    truncated member, a header whose size runs past the end of the file (octal or base-256), an unsafe
    member name, or a header that does not parse.
    """
    members: dict[str, TarMember] = {}
    end = _file_size(fileobj)
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tf:
            while True:
                info = tf.next()
                if info is None:
                    return members, None
                if not info.isfile():
                    continue
                if info.offset_data + info.size > end:
                    return members, _past_end(info, end, shard)
                name = check_member_name(info.name, shard)
                members[name] = TarMember(name, info.offset_data, info.size)
    except SparkleDataError as e:
        return members, e
    except (tarfile.TarError, OverflowError, ValueError, EOFError) as e:
        return members, SparkleDataError(f"not a readable uncompressed tar ({e})", path=shard)


def index_tar(fileobj: IO[bytes], shard: str) -> dict[str, TarMember]:
    """Map member name -> byte range for every regular file in an uncompressed tar; any damage raises."""
    members, damage = scan_tar(fileobj, shard)
    if damage is not None:
        raise damage
    return members


def iter_tar(
    fileobj: IO[bytes], shard: str, wanted: set[str] | None = None, total_size: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` for regular members in stream order; others are read past, not kept.

    Raises a ``SparkleDataError`` naming the shard at the first damage; what was yielded before it is
    intact. ``total_size`` (the shard's size, when known) lets a header that runs past the end be named
    before any of its data is read.
    """
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                if total_size is not None and info.offset_data + info.size > total_size:
                    raise _past_end(info, total_size, shard)
                if info.size > MAX_MEMBER_BYTES:
                    raise SparkleDataError(
                        f"tar member {info.name!r} at byte {info.offset} claims {info.size} bytes, more than any "
                        f"video ({MAX_MEMBER_BYTES} bytes): the shard's header is damaged",
                        path=shard,
                    )
                name = check_member_name(info.name, shard)
                if wanted is not None and name not in wanted:
                    continue
                extracted = tf.extractfile(info)
                if extracted is None:  # pragma: no cover - regular files always extract
                    continue
                data = extracted.read()
                if len(data) != info.size:
                    raise SparkleDataError(f"tar member {info.name!r} is truncated", path=shard)
                yield name, data
    except (tarfile.TarError, OverflowError, EOFError) as e:
        raise SparkleDataError(f"not a readable uncompressed tar ({e})", path=shard) from e
