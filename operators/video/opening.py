"""Opening a video with PyAV and naming precisely why it cannot be read.

Every failure a user's file can cause becomes a :class:`VideoError` with one of the reasons
below, which the probe and the sampler turn into a ``rejected/`` row:

- ``unreadable``: missing path, a symlink loop, a directory, a FIFO or device (never opened:
  a FIFO would block), no permission, storage error;
- ``empty_file``: zero bytes;
- ``not_a_video``: no known container (random bytes, a text file);
- ``no_video_stream``: a container without a picture stream (audio only, cover art only);
- ``corrupt``: a known container that FFmpeg cannot read (truncated, ``moov`` atom missing,
  decode errors).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Any

from operators.base import RowRejected
from operators.io import file_size, is_local, local_path, open_binary

logger = logging.getLogger(__name__)

#: Leading bytes of containers FFmpeg reads; a file starting with one of them that FFmpeg
#: still refuses is a damaged video ("corrupt"), anything else is "not_a_video".
_MAGIC_AT_0 = (
    b"RIFF",
    b"\x1a\x45\xdf\xa3",
    b"OggS",
    b"FLV",
    b"\x00\x00\x01\xba",
    b"\x00\x00\x01\xb3",
    b"\x30\x26\xb2\x75",
    b"YUV4MPEG2",
    b"nut/multimedia",
)
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")


class VideoError(RowRejected):
    """A per-video problem of a file: the row is rejected with ``reason``; never a bug."""


def looks_like_video_container(head: bytes) -> bool:
    if head[4:8] in _MP4_BOXES:
        return True
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:  # MPEG-TS sync bytes
        return True
    return any(head.startswith(magic) for magic in _MAGIC_AT_0)


def _check_readable(uri: str) -> int:
    """The size in bytes, after the cheap checks that give a precise reason."""
    try:
        if is_local(uri):
            path = local_path(uri)
            info = os.stat(path)  # follows links: a loop or a dangling link fails here
            mode = info.st_mode
            if stat.S_ISDIR(mode):
                raise VideoError("unreadable", f"is a directory: {uri}")
            if not stat.S_ISREG(mode):
                # Opening a FIFO blocks until a writer comes, a device may never end: never open.
                raise VideoError("unreadable", f"not a regular file ({_file_kind(mode)}): {uri}")
            size = info.st_size
            with open(path, "rb"):  # permission errors surface here, not deep inside FFmpeg
                pass
        else:
            size = file_size(uri)
    except VideoError:
        raise
    except OSError as exc:
        raise VideoError("unreadable", f"{type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # storage clients raise their own types for missing keys, auth
        raise VideoError("unreadable", f"{type(exc).__name__}: {exc}") from exc
    if size == 0:
        raise VideoError("empty_file", f"0 bytes: {uri}")
    return int(size or 0)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "fifo"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def _classify_open_error(uri: str, exc: Exception) -> VideoError:
    import av

    if isinstance(exc, OSError) and not isinstance(exc, av.error.InvalidDataError):
        return VideoError("unreadable", f"{type(exc).__name__}: {exc}")
    try:
        with open_binary(uri) as f:
            head = f.read(512)
    except Exception:  # noqa: BLE001 - the open error below is the one worth reporting
        head = b""
    reason = "corrupt" if looks_like_video_container(head) else "not_a_video"
    return VideoError(reason, f"FFmpeg cannot open it: {exc}")


@contextmanager
def open_video(uri: str) -> Iterator[tuple[Any, int]]:
    """Open ``uri`` for decoding; yields ``(container, size_bytes)``.

    Local paths go to FFmpeg directly (its own buffered I/O); other URIs through fsspec.
    """
    import av

    size = _check_readable(uri)
    fileobj = None
    try:
        try:
            if is_local(uri):
                container = av.open(local_path(uri), metadata_errors="ignore")
            else:
                fileobj = open_binary(uri)
                container = av.open(fileobj, metadata_errors="ignore")
        except av.error.FFmpegError as exc:
            raise _classify_open_error(uri, exc) from exc
        except OSError as exc:
            raise VideoError("unreadable", f"{type(exc).__name__}: {exc}") from exc
        try:
            yield container, size
        finally:
            container.close()
    finally:
        if fileobj is not None:
            fileobj.close()


def video_stream(container: Any) -> Any:
    """The main picture stream (not cover art), or ``no_video_stream``."""
    import av

    attached = int(av.stream.Disposition.attached_pic)
    streams = [s for s in container.streams.video if not int(s.disposition) & attached]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError("no_video_stream", f"streams: {', '.join(kinds)}")
    return streams[0]


def stream_origin(stream: Any) -> Fraction:
    """Presentation time (s) of the stream's start; clip times count from here."""
    if stream.start_time is None or stream.time_base is None:
        return Fraction(0)
    return stream.start_time * stream.time_base


def normalize_rotation(degrees: float | int | None) -> int:
    """Counter-clockwise display rotation snapped to 0, 90, 180 or 270."""
    if not degrees:
        return 0
    return int(round(float(degrees) / 90.0)) % 4 * 90


def display_size(
    width: int, height: int, rotation: int, sample_aspect: Fraction | None = None
) -> tuple[int, int]:
    """Size as a player shows it: non-square pixels stretched, 90/270 rotations swapped."""
    if sample_aspect and sample_aspect > 0 and sample_aspect != 1:
        width = max(1, int(round(width * sample_aspect)))
    return (height, width) if rotation in (90, 270) else (width, height)
