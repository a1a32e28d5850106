"""Opening inputs and writing outputs on any storage: local paths, s3://, gs://, tar members.

A video URI is one of:
- a local path (``/data/a.mp4``) or ``file://`` URL;
- any fsspec URL (``s3://bucket/a.mp4``, ``gs://bucket/a.mp4``, ``memory://a.mp4``);
- a member of a tar shard in fsspec's chained form ``tar://KEY.mp4::SHARD_URL``;
- a byte range of a file, ``FILE#offset=O&size=N&member=NAME``: how a keyframe packed into an
  uncompressed archive is addressed (``member`` is its name inside, for people and exports).
  Reading one is a single ranged read (one GET on an object store), never an archive scan.
- the same with the member's place in the shard, ``tar://KEY.mp4@OFFSET+SIZE::SHARD_URL`` (what
  the webdataset listing writes): read with one range read of the shard, no index scan.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import uuid
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

from operators.dataset.schema import TEMP_PREFIX


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://"):] if uri.startswith("file://") else uri


class ByteRange(NamedTuple):
    """A run of bytes inside a file: a member of an uncompressed archive."""

    file: str
    offset: int
    size: int
    member: str


# The member name is last and may hold anything but a newline; our writers never put "#" in
# a file name they create, so a path with this tail is always a range.
_RANGE = re.compile(r"^(?P<file>.+?)#offset=(?P<offset>\d+)&size=(?P<size>\d+)&member=(?P<member>[^\n]*)$")


def range_uri(file: str, offset: int, size: int, member: str) -> str:
    """The URI of ``size`` bytes at ``offset`` in ``file`` (which may be relative)."""
    return f"{file}#offset={int(offset)}&size={int(size)}&member={member}"


def parse_range_uri(uri: str) -> ByteRange | None:
    """The parts of a byte-range URI, or None when ``uri`` is a plain file or URL."""
    m = _RANGE.match(uri)
    if m is None:
        return None
    return ByteRange(m["file"], int(m["offset"]), int(m["size"]), m["member"])


def read_range(file: str, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` in ``file``: a seek and a read, or one ranged GET."""
    if is_local(file):
        with open(local_path(file), "rb") as f:
            f.seek(offset)
            data = f.read(size)
    else:
        fs, path = filesystem(file)
        data = fs.cat_file(path, start=offset, end=offset + size)
    if len(data) != size:
        raise OSError(f"{file}: wanted {size} bytes at offset {offset}, the file holds {len(data)}")
    return data
_RANGED_MEMBER = re.compile(r"^tar://(?P<member>.+)@(?P<offset>\d+)\+(?P<size>\d+)::(?P<shard>.+)$")


def member_uri(member: str, shard: str, offset: int | None = None, size: int | None = None) -> str:
    """The URI of a tar member; with its data's ``offset`` and ``size``, a directly readable one."""
    if offset is None or size is None:
        return f"tar://{member}::{shard}"
    return f"tar://{member}@{offset}+{size}::{shard}"


def ranged_member(uri: str) -> tuple[str, int, int] | None:
    """``(shard, offset, size)`` of a ranged tar member URI, else None."""
    match = _RANGED_MEMBER.match(uri)
    if match is None:
        return None
    return match["shard"], int(match["offset"]), int(match["size"])


_HELD = threading.local()


@contextlib.contextmanager
def holding(uri: str, data: bytes | None) -> Iterator[None]:
    """Within the block, :func:`open_binary` (and so every opener of a video) reads ``uri`` from
    ``data``, the bytes an earlier stage read and handed on (``source_bytes``), instead of the
    storage: a shard member is read once, by the probe, whatever stages open it after.
    ``data=None`` changes nothing. Per thread, so concurrent batches do not see each other's."""
    if data is None:
        yield
        return
    held = getattr(_HELD, "by_uri", None)
    if held is None:
        held = _HELD.by_uri = {}
    held[uri] = data
    try:
        yield
    finally:
        held.pop(uri, None)


def held_bytes(uri: str) -> bytes | None:
    """The bytes :func:`holding` put in place for ``uri`` on this thread, if any."""
    return getattr(_HELD, "by_uri", {}).get(uri)


def open_binary(uri: str) -> IO[bytes]:
    """Open ``uri`` for reading as a seekable binary file object."""
    held = held_bytes(uri)
    if held is not None:
        return io.BytesIO(held)
    ranged = parse_range_uri(uri)
    if ranged is not None:
        # Members are small (a keyframe JPEG): read once into memory, seekable at no cost.
        return io.BytesIO(read_range(ranged.file, ranged.offset, ranged.size))
    member = ranged_member(uri)
    if member is not None:
        # One read of the member's bytes: a tar member is a video of a few MB, and holding it
        # costs less than re-reading the shard (or its index) for every seek FFmpeg makes.
        shard, offset, size = member
        try:
            return io.BytesIO(read_range(shard, offset, size))
        except OSError as exc:
            raise EOFError(f"{uri[:300]}: the shard ends before the member does ({exc})") from None
    if is_local(uri):
        return open(local_path(uri), "rb")
    import fsspec

    opened = fsspec.open(uri, "rb")
    f = opened.open()
    # fsspec does not cache archive filesystems (tar://) and closes the archive as soon as the
    # filesystem object is garbage-collected; tie its lifetime to the file's.
    with contextlib.suppress(AttributeError):
        f._opened_by = opened
    return f


def file_size(uri: str) -> int | None:
    ranged = ranged_member(uri)
    if ranged is not None:
        return ranged[2]
    packed = parse_range_uri(uri)
    if packed is not None:
        return packed.size
    if is_local(uri):
        return os.path.getsize(local_path(uri))
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri)
    info = fs.info(path)
    return info.get("size")


def filesystem(uri: str) -> tuple[Any, str]:
    """The fsspec filesystem and path for a directory or file URI."""
    import fsspec

    return fsspec.core.url_to_fs(local_path(uri) if is_local(uri) else uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write ``data`` to ``uri`` so that readers never see a half-written file.

    Local files and most object stores: write a temporary name in the same place, then rename.
    (On object stores a single PUT is already atomic; the rename is a cheap copy there.)
    """
    fs, path = filesystem(uri)
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    if parent:
        fs.makedirs(parent, exist_ok=True)
    name = f"{TEMP_PREFIX}{uuid.uuid4().hex}"  # a name every reader of an output skips
    tmp = f"{parent}/{name}" if parent else name
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)
