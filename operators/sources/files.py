"""Listing and resolving files on any storage: local paths, s3://, gs://, memory://."""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from operators.io import filesystem, is_local, local_path

logger = logging.getLogger(__name__)

_BRACE = re.compile(r"\{([^{}]*)\}")


def has_glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def is_local_fs(fs: Any) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def to_uri(fs: Any, path: str) -> str:
    """A local absolute path for local files, the full URI for remote ones."""
    return os.path.abspath(path) if is_local_fs(fs) else fs.unstrip_protocol(path)


#: Distinct extensions counted one by one among skipped files; the rest are counted as "(other)".
_MAX_SKIPPED_KEYS = 32
_EXTENSION = re.compile(r"\.[a-z0-9]{1,10}")


def extension_key(path: str) -> str:
    """How a skipped file is counted: its lower-case extension (``.srt``), ``(none)`` or ``(other)``."""
    name = path.rsplit("/", 1)[-1]
    if "." not in name:
        return "(none)"
    ext = "." + name.rsplit(".", 1)[1].lower()
    return ext if _EXTENSION.fullmatch(ext) else "(other)"


def list_files(
    path: str, extensions: Iterable[str] | None, recursive: bool = True, skipped: Counter | None = None
) -> tuple[Any, str, list[str]]:
    """List the files of a directory, a glob or a single file, on any storage, sorted.

    Returns ``(filesystem, root, paths)`` where ids are taken relative to ``root``. Hidden files
    (name starting with a dot, e.g. macOS ``._x.mp4``) are skipped. Files left out because of
    their extension are counted into ``skipped`` (see :func:`extension_key`) when it is given.
    """
    fs, fs_path = filesystem(path)
    if has_glob(fs_path):
        root = pattern_root(fs_path)
        found = fs.glob(fs_path, detail=True)
    elif fs.isdir(fs_path):
        root = fs_path.rstrip("/")
        found = fs.find(fs_path, maxdepth=None if recursive else 1, detail=True)
    elif fs.isfile(fs_path):
        root = fs_path.rsplit("/", 1)[0]
        found = {fs_path: {"type": "file"}}
    else:
        raise ValueError(f"input path {path!r} does not exist")
    exts = tuple(e.lower() for e in extensions) if extensions is not None else None
    paths = []
    for p, info in found.items():
        if info.get("type") == "directory" or p.rsplit("/", 1)[-1].startswith("."):
            continue
        if exts is None or p.lower().endswith(exts):
            paths.append(p)
        elif skipped is not None:
            key = extension_key(p)
            if key not in skipped and len(skipped.keys() - {"(other)"}) >= _MAX_SKIPPED_KEYS:
                key = "(other)"
            skipped[key] += 1
    paths.sort()
    return fs, root, paths


class FileResolver:
    """Builds the URI of a file under ``root`` and tells whether it exists.

    Local roots are checked file by file; a remote root is listed once, which is far cheaper
    than one request per file when metadata names millions of them.
    """

    def __init__(self, root: str) -> None:
        self.fs, self.root = filesystem(root)
        self.root = self.root.rstrip("/")
        self.local = is_local(root) and is_local_fs(self.fs)
        self._listing: set[str] | None = None

    def uri(self, relative: str) -> str:
        """The URI of ``relative`` under the root, without looking at the storage."""
        path = f"{self.root}/{relative.lstrip('/')}"
        return os.path.abspath(local_path(path)) if self.local else self.fs.unstrip_protocol(path)

    def resolve(self, relative: str) -> tuple[str, bool]:
        """``(uri, exists)`` of ``relative`` under the root."""
        uri = self.uri(relative)
        if self.local:
            return uri, os.path.isfile(uri)
        if self._listing is None:
            self._listing = set(self.fs.find(self.root)) if self.fs.isdir(self.root) else set()
        return uri, f"{self.root}/{relative.lstrip('/')}" in self._listing


def expand_braces(pattern: str) -> list[str]:
    """Expand ``{00000..00009}`` ranges (zero padding kept) and ``{a,b}`` lists, as webdataset does."""
    match = _BRACE.search(pattern)
    if not match:
        return [pattern]
    body, head, tail = match.group(1), pattern[: match.start()], pattern[match.end() :]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        lo, hi = numeric.groups()
        if int(hi) - int(lo) > 10_000_000:
            raise ValueError(f"input.shards: range {{{body}}} is too large")
        width = max(len(lo), len(hi)) if lo.startswith("0") and len(lo) > 1 else 0
        choices = [f"{k:0{width}d}" for k in range(int(lo), int(hi) + 1)]
    elif "," in body:
        choices = body.split(",")
    else:
        choices = ["{" + body + "}"]
    return [head + choice + rest for choice in choices for rest in expand_braces(tail)]


def pattern_root(path: str) -> str:
    """The folder a glob or brace pattern starts from."""
    marks = [i for i, c in enumerate(path) if c in "{*?["]
    prefix = path[: marks[0]] if marks else path
    return prefix.rsplit("/", 1)[0] if "/" in prefix else ""
