"""The folder an export writes: checked before anything is written, filled file by file.

A folder holds one export. ``DIR/.sg4v-export.json`` says which (format, source output, whether
it finished); it is written first, so an export killed halfway is still recognised as one.
Writing into a folder that holds another export needs ``overwrite`` (the old export is removed
first, so no stale shard or archive survives); a non-empty folder that is not an export is
never touched. Every file appears under its final name only once complete (a temporary name,
then a rename; on object storage, a local file uploaded in one piece).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

from operators.dataset.exports.rows import ExportError
from operators.io import filesystem, is_local, join, local_path, open_binary

logger = logging.getLogger(__name__)

MARKER = ".sg4v-export.json"


class Destination:
    """``dest`` (local path or fsspec URI) prepared for a ``fmt`` export of ``output``."""

    def __init__(self, dest: str, fmt: str, output: str, overwrite: bool = False) -> None:
        self.uri, self.fmt, self.output = dest.rstrip("/"), fmt, output
        self.local = is_local(dest)
        self.fs, self.root = filesystem(self.uri)
        self._prepare(overwrite)
        self._marker({"format": fmt, "output": output, "complete": False,
                      "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def _prepare(self, overwrite: bool) -> None:
        fs, root = self.fs, self.root
        if fs.exists(root) and not fs.isdir(root):
            raise ExportError(f"--dest {self.uri} is a file, not a folder")
        entries = fs.ls(root, detail=False) if fs.exists(root) else []
        if entries:
            marker = f"{root}/{MARKER}"
            if not fs.exists(marker):
                raise ExportError(f"--dest {self.uri} is not empty and holds no export; "
                                  "choose an empty or new folder")
            previous = json.loads(fs.cat_file(marker))
            if not overwrite:
                raise ExportError(f"--dest {self.uri} holds a {previous.get('format')} export of "
                                  f"{previous.get('output')}; pass --overwrite to replace it")
            fs.rm(root, recursive=True)
        fs.makedirs(root, exist_ok=True)

    def _marker(self, info: dict[str, Any]) -> None:
        with self.writing(MARKER) as path, open(path, "w", encoding="utf-8") as f:
            json.dump(info, f, indent=2)

    def finish(self, **info: Any) -> None:
        """Mark the export complete, with what it holds."""
        self._marker({"format": self.fmt, "output": self.output, "complete": True,
                      "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **info})

    def path(self, relative: str) -> str:
        return join(self.uri, relative)

    @contextlib.contextmanager
    def writing(self, relative: str) -> Iterator[str]:
        """A local path to write ``relative`` to; it appears under its name on success only."""
        if self.local:
            final = local_path(self.path(relative))
            folder = os.path.dirname(final)
            os.makedirs(folder, exist_ok=True)
        else:
            final, folder = "", tempfile.gettempdir()
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}-{os.path.basename(relative)}")
        try:
            yield tmp
            if self.local:
                os.replace(tmp, final)
            else:
                self.fs.put_file(tmp, filesystem(self.path(relative))[1])
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def add_file(self, source: str, relative: str) -> None:
        """Put the file at ``source`` (any URI) at ``relative``: a hard link when both are on
        the same local disk (no copy, and the folder stays movable), else a copy."""
        if self.local and is_local(source):
            final = local_path(self.path(relative))
            os.makedirs(os.path.dirname(final), exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.remove(final)
            try:
                os.link(local_path(source), final)
                return
            except OSError:
                pass  # another disk, or a filesystem without hard links: copy
        with self.writing(relative) as tmp, open_binary(source) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
