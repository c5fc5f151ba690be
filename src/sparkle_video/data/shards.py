"""Reading official-style tar shards without extracting them.

Two access patterns: ``index_tar`` scans member headers of a seekable file (seeking over the data, so
only headers are read) and returns byte ranges that a ``VideoReader`` opens directly; ``iter_tar``
reads members in stream order for streaming, never seeking.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
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
    #: the header's stored checksum: reading the member again checks its header still says the same
    chksum: int = field(default=-1, compare=False)


@dataclass
class ShardScan:
    """What one pass over a shard's headers found.

    ``members`` are the sound regular files; ``refused`` maps a member name to the error that keeps it
    out (a name stored twice, a sparse file): the rest of the shard is still usable. ``damage`` is the
    first damage that ended the scan, or ``None``.
    """

    members: dict[str, TarMember] = field(default_factory=dict)
    refused: dict[str, SparkleDataError] = field(default_factory=dict)
    damage: SparkleDataError | None = None


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


def duplicate_error(name: str, offsets: Collection[int], shard: str) -> SparkleDataError:
    """A member name stored more than once: which copy a reader gets would depend on how it reads."""
    where = ", ".join(str(o) for o in sorted(offsets))
    return SparkleDataError(
        f"tar member {name!r} is stored {len(offsets)} times (headers at bytes {where}): one name must "
        "hold one sample, so none of the copies is read",
        path=shard,
    )


def sparse_error(info: tarfile.TarInfo, shard: str) -> SparkleDataError:
    """A sparse member's stored bytes are a map plus data, not the file: refuse it rather than misread."""
    return SparkleDataError(
        f"tar member {info.name!r} at byte {info.offset} is a sparse file: its stored bytes are not the "
        "file's bytes; repack the shard with regular members",
        path=shard,
    )


def scan_shard(fileobj: IO[bytes], shard: str) -> ShardScan:
    """Index a seekable uncompressed tar up to its first damage, refusing ambiguous members by name.

    Damage (which ends the scan) is a truncated member, a header whose size runs past the end of the
    file (octal or base-256), an unsafe member name, or a header that does not parse. A regular-file name
    stored twice and a sparse member are refused (``ShardScan.refused``) and the scan goes on.
    """
    scan = ShardScan()
    end = _file_size(fileobj)
    offsets: dict[str, list[int]] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tf:
            while True:
                info = tf.next()
                if info is None:
                    return scan
                if not info.isfile():
                    continue
                if (
                    not info.issparse() and info.offset_data + info.size > end
                ):  # a sparse size is the real one
                    scan.damage = _past_end(info, end, shard)
                    return scan
                name = check_member_name(info.name, shard)
                offsets.setdefault(name, []).append(info.offset)
                if len(offsets[name]) > 1:
                    scan.members.pop(name, None)
                    scan.refused[name] = duplicate_error(name, offsets[name], shard)
                elif info.issparse():
                    scan.refused[name] = sparse_error(info, shard)
                elif name not in scan.refused:
                    scan.members[name] = TarMember(name, info.offset_data, info.size, info.chksum)
    except SparkleDataError as e:
        scan.damage = e
    except (tarfile.TarError, OverflowError, ValueError, EOFError) as e:
        scan.damage = SparkleDataError(f"not a readable uncompressed tar ({e})", path=shard)
    return scan


def scan_tar(fileobj: IO[bytes], shard: str) -> tuple[dict[str, TarMember], SparkleDataError | None]:
    """``scan_shard`` as ``(members, damage)``: a refused member counts as damage when nothing else is."""
    scan = scan_shard(fileobj, shard)
    damage = scan.damage or next(iter(scan.refused.values()), None)
    return scan.members, damage


def check_member_header(fileobj: IO[bytes], member: TarMember, shard: str) -> None:
    """Re-read a member's own header and check it is the one indexed (same checksum and size).

    The header block sits just before the data, so this costs one 512-byte read where the member is
    read anyway; a shard rewritten under the same name and size is caught here.
    """
    if member.chksum < 0:
        return
    fileobj.seek(member.offset - tarfile.BLOCKSIZE)
    buf = fileobj.read(tarfile.BLOCKSIZE)
    try:
        info = tarfile.TarInfo.frombuf(buf, tarfile.ENCODING, "surrogateescape")
    except tarfile.TarError as e:
        raise _changed(shard, member.name, f"its header no longer parses ({e})") from e
    if info.chksum != member.chksum or (info.size != member.size and info.size != 0):
        raise _changed(shard, member.name, "its header differs from the indexed one")


def _changed(shard: str, name: str, why: str) -> SparkleDataError:
    return SparkleDataError(
        f"the shard changed after it was indexed: tar member {name!r} is not where it was ({why}); "
        "load the dataset again",
        path=shard,
    )


def index_tar(fileobj: IO[bytes], shard: str) -> dict[str, TarMember]:
    """Map member name -> byte range for every regular file in an uncompressed tar; any damage raises.

    So does a refused member (a name stored twice, a sparse file): no copy of it is ever returned.
    """
    members, damage = scan_tar(fileobj, shard)
    if damage is not None:
        raise damage
    return members


def iter_tar(
    fileobj: IO[bytes],
    shard: str,
    wanted: set[str] | None = None,
    total_size: int | None = None,
    *,
    expected: ShardScan | None = None,
    check: Callable[[], None] | None = None,
) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, bytes)`` for regular members in stream order; others are read past, not kept.

    Raises a ``SparkleDataError`` naming the shard at the first damage; what was yielded before it is
    intact. ``total_size`` (the shard's size, when known) lets a header that runs past the end be named
    before any of its data is read. ``expected`` is a header scan of the same shard: its refused members
    are read past, and every member must sit where the scan saw it, with the same size and header
    checksum. ``check`` runs after each member is read and before it is yielded (it raises when the
    file changed). Without a scan, a sparse member or a second copy of a name raises.
    """
    seen: dict[str, int] = {}
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tf:
            for info in tf:
                if not info.isfile():
                    continue
                sparse = info.issparse()  # its size is the real one, not what is stored: checked below
                if not sparse and total_size is not None and info.offset_data + info.size > total_size:
                    raise _past_end(info, total_size, shard)
                if not sparse and info.size > MAX_MEMBER_BYTES:
                    raise SparkleDataError(
                        f"tar member {info.name!r} at byte {info.offset} claims {info.size} bytes, more than any "
                        f"video ({MAX_MEMBER_BYTES} bytes): the shard's header is damaged",
                        path=shard,
                    )
                name = check_member_name(info.name, shard)
                if expected is not None and name in expected.refused:
                    continue
                if name in seen:
                    raise duplicate_error(name, (seen[name], info.offset), shard)
                seen[name] = info.offset
                if sparse:
                    raise sparse_error(info, shard)
                if expected is not None:
                    _check_expected(expected, info, name, shard)
                if wanted is not None and name not in wanted:
                    continue
                extracted = tf.extractfile(info)
                if extracted is None:  # pragma: no cover - regular files always extract
                    continue
                data = extracted.read()
                if len(data) != info.size:
                    raise SparkleDataError(f"tar member {info.name!r} is truncated", path=shard)
                if check is not None:
                    check()
                yield name, data
    except (tarfile.TarError, OverflowError, EOFError) as e:
        raise SparkleDataError(f"not a readable uncompressed tar ({e})", path=shard) from e


def _check_expected(expected: ShardScan, info: tarfile.TarInfo, name: str, shard: str) -> None:
    """A streamed member must be the one the header scan found, byte range and checksum alike."""
    member = expected.members.get(name)
    if member is None and expected.damage is not None:  # past the damage the scan stopped at
        return
    if member is None:
        raise _changed(shard, name, "the header scan did not see it")
    if (member.offset, member.size) != (info.offset_data, info.size) or (
        member.chksum >= 0 and member.chksum != info.chksum
    ):
        raise _changed(shard, name, "its header differs from the scanned one")
