"""Where listed videos may come from: manifests and metadata are data, not instructions.

A manifest row, a Panda-70M ``videoID`` or an Ego4D ``video_uid`` ends up naming a file to open.
Whoever wrote that data must not be able to make the job read ``../../etc/passwd``, a file
outside the folders the user named, or fetch ``http://`` URLs. :class:`InputPolicy` holds the
two settings every data-driven source shares; :meth:`InputPolicy.verdict` judges one URI
without touching it (no open, no network; local paths are only ``realpath``-ed to resolve
``..`` and symbolic links). A URI that fails becomes a row rejected at stage ``source``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable

from pydantic import Field, field_validator

from operators.io import is_local, local_path
from operators.sources.common import SourceBase

DEFAULT_ALLOWED_SCHEMES: tuple[str, ...] = ("file", "s3", "gs")
OUTSIDE_ROOTS = "outside_input_roots"
SCHEME_NOT_ALLOWED = "scheme_not_allowed"


def uri_scheme(uri: str) -> str:
    """``file`` for a local path, else the lower-cased part before ``://``."""
    return "file" if "://" not in uri else uri.split("://", 1)[0].lower()


def normalized_location(uri: str) -> str:
    """A URI with ``.``/``..`` segments folded; local paths absolute with symlinks resolved."""
    if is_local(uri):
        return os.path.realpath(local_path(uri))
    scheme, rest = uri.split("://", 1)
    normalized = posixpath.normpath("/" + rest).lstrip("/")  # '/' first: '..' cannot climb above
    return f"{scheme.lower()}://{normalized}"


def is_under(location: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return location == root or location.startswith(root if root.endswith("/") else root + "/")


class InputPolicy(SourceBase):
    """Settings shared by the sources whose file names come from data (manifests, metadata)."""

    allowed_roots: list[str] | None = Field(
        default=None,
        description="Folders or URI prefixes every listed video must lie under, after `..` is "
        "folded and, for local paths, symbolic links are resolved; a video elsewhere is rejected "
        "as `outside_input_roots` and never opened. None: the source's `root` (and, for a "
        "manifest, the manifest's own folder).",
    )
    allowed_schemes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_SCHEMES),
        description="URI schemes a listed video may use (`file` = local paths). Others, e.g. "
        "`http`/`https`, are rejected as `scheme_not_allowed` and never fetched. The schemes of "
        "the allowed roots are always allowed.",
    )

    @field_validator("allowed_schemes")
    @classmethod
    def _lower(cls, values: list[str]) -> list[str]:
        return [v.lower().removesuffix("://") for v in values]

    def rules(self, default_roots: Iterable[str | None]) -> UriRules:
        """The rules for one listing; ``default_roots`` apply when ``allowed_roots`` is None."""
        roots = self.allowed_roots if self.allowed_roots is not None else default_roots
        return UriRules([r for r in roots if r], self.allowed_schemes)


class UriRules:
    """:class:`InputPolicy` with its roots normalized once per listing."""

    def __init__(self, roots: list[str], schemes: list[str]) -> None:
        self.roots = [normalized_location(r) for r in roots]
        self.schemes = {*schemes, *(uri_scheme(r) for r in roots)}

    def verdict(self, uri: str) -> tuple[str, str] | None:
        """``(reason, detail)`` when ``uri`` may not be read, else None."""
        parts = uri.split("::")  # fsspec chains (tar://member::s3://shard): every link counts
        for part in parts:
            scheme = uri_scheme(part)
            if scheme not in self.schemes:
                return SCHEME_NOT_ALLOWED, (
                    f"{uri[:300]}: scheme {scheme!r} is not in allowed_schemes "
                    f"{sorted(self.schemes)}; it was not fetched"
                )
        location = normalized_location(parts[-1])
        if not any(is_under(location, root) for root in self.roots):
            return OUTSIDE_ROOTS, (
                f"{uri[:300]} resolves to {location[:300]}, outside the input roots "
                f"{self.roots}; it was not read (add its folder to allowed_roots to take it)"
            )
        return None
