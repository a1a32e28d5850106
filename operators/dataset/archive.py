"""Keyframe archives: many small images in one uncompressed tar, each addressed by byte range.

At Panda-70M scale one object per keyframe is 100-200M objects: slow to list, to copy and to
delete, and billed per request. ``select_keyframes`` instead writes one archive per task batch
under ``keyframes/`` and gives each row's ``keyframe_paths`` the byte-range URI of its members
(``operators.io.range_uri``), so a reader fetches one image with one ranged read and never scans
the archive. The archive is a plain POSIX tar, so ``tar -xf`` and any tar reader still open it.

An archive is named after the ids of the videos whose images it holds, like the writer's Parquet
files: a task Ray retries rewrites its own archive instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterable, Sequence

from operators.dataset.schema import KEYFRAMES_DIR
from operators.io import join, range_uri, write_bytes_atomic

ARCHIVE_SUFFIX = ".tar"


def archive_name(video_ids: Iterable[str]) -> str:
    """Path, relative to the output root, of the archive holding these videos' keyframes."""
    digest = hashlib.sha256("\n".join(video_ids).encode()).hexdigest()[:24]
    return f"{KEYFRAMES_DIR}/part-{digest}{ARCHIVE_SUFFIX}"


def pack(members: Sequence[tuple[str, bytes]]) -> tuple[bytes, list[tuple[int, int]]]:
    """An uncompressed tar of ``(name, data)`` members and each member's (offset, size) in it."""
    buffer = io.BytesIO()
    spans = []
    # PAX headers carry names of any length; fixed mtime/uid keep a rewrite byte-identical.
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            # The data follows the member's header blocks (one, or more for a long name).
            header = info.tobuf(tar.format, tar.encoding, tar.errors)
            spans.append((tar.offset + len(header), len(data)))
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), spans


def write_archive(output: str, video_ids: Sequence[str],
                  members: Sequence[tuple[str, bytes]]) -> list[str]:
    """Write ``members`` as one archive under ``output`` (temporary name, then rename) and
    return each member's byte-range URI, relative to the output root."""
    relative = archive_name(video_ids)
    data, spans = pack(members)
    write_bytes_atomic(join(output, relative), data)
    return [range_uri(relative, offset, size, name)
            for (name, _), (offset, size) in zip(members, spans, strict=True)]
