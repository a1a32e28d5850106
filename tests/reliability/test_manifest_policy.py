"""Manifests and metadata are data, not code: what they name is checked before anything is read."""

from __future__ import annotations

import json
import socket

import pytest

from operators.sources import ManifestSource, Panda70MSource, list_source_rows
from operators.sources.webdataset import WebDatasetSource, read_shard

HOSTILE_CAPTIONS = [
    "{{ config.__class__.__init__.__globals__['os'].popen('id').read() }}",
    "__import__('os').system('touch /tmp/pwned')",
    "$(touch /tmp/pwned); `id` ${HOME} %(x)s {0}",
]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve or connect fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def tree(tmp_path):
    """``root/`` with the manifest and a video; a secret beside it; a link from inside to it."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "videos").mkdir(parents=True)
    outside.mkdir()
    (root / "videos" / "a.mp4").write_bytes(b"video")
    (outside / "secret.mp4").write_bytes(b"secret")
    (root / "videos" / "link.mp4").symlink_to(outside / "secret.mp4")
    return root, outside


def manifest_rows(root, uris: list[str], captions: list[str] | None = None, **policy) -> dict[str, dict]:
    lines = [json.dumps({"uri": u, "caption": (captions or [None] * len(uris))[i], "video_id": f"r{i}"})
             for i, u in enumerate(uris)]
    (root / "m.jsonl").write_text("\n".join(lines) + "\n")
    config = ManifestSource(kind="manifest", path=str(root / "m.jsonl"), **policy)
    return {row["video_id"]: row for row in list_source_rows(config)}


def test_paths_outside_the_roots_and_disabled_schemes_are_rejected_unread(tree, no_network, monkeypatch):
    root, outside = tree
    opened: list[str] = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    uris = ["videos/a.mp4", "../../etc/passwd", str(outside / "secret.mp4"), "http://example.com/a.mp4",
            f"file://{root}/videos/a.mp4", "videos/../../outside/secret.mp4", "videos/link.mp4",
            "https://example.com/b.mp4", "tar://x.mp4::http://example.com/s.tar", "ftp://h/c.mp4"]
    rows = manifest_rows(root, uris)
    reasons = {vid: (row["reject_stage"], row["reject_reason"]) for vid, row in rows.items()}
    assert reasons == {
        "r0": (None, None),
        "r1": ("source", "outside_input_roots"),
        "r2": ("source", "outside_input_roots"),
        "r3": ("source", "scheme_not_allowed"),
        "r4": (None, None),  # file:// inside the root
        "r5": ("source", "outside_input_roots"),
        "r6": ("source", "outside_input_roots"),  # a symlink inside the root pointing out of it
        "r7": ("source", "scheme_not_allowed"),
        "r8": ("source", "scheme_not_allowed"),
        "r9": ("source", "scheme_not_allowed"),
    }
    assert "/etc/passwd" in rows["r1"]["reject_detail"] and "not read" in rows["r1"]["reject_detail"]
    assert not [path for path in opened if "secret" in path or "passwd" in path]


def test_allowed_roots_and_schemes_open_the_door_explicitly(tree, no_network):
    root, outside = tree
    rows = manifest_rows(root, [str(outside / "secret.mp4"), "https://cdn.example.com/v/b.mp4",
                                "https://cdn.example.com/v/../../admin/c.mp4"],
                         allowed_roots=[str(root), str(outside), "https://cdn.example.com/v"],
                         allowed_schemes=["file", "https"])
    assert [r["reject_reason"] for r in rows.values()] == [None, None, "outside_input_roots"]


def test_captions_are_stored_verbatim_never_evaluated(tree, tmp_path):
    root, _ = tree
    rows = manifest_rows(root, ["videos/a.mp4"] * 3, HOSTILE_CAPTIONS)
    assert [row["source_caption"] for row in rows.values()] == HOSTILE_CAPTIONS
    assert not (tmp_path / "pwned").exists()


def test_panda70m_ids_cannot_climb_out_of_the_root(tree, no_network):
    root, _ = tree
    (root / "p.csv").write_text(
        "videoID,url,timestamp,caption\n"
        "a,https://youtube.com/watch?v=a,\"[['0:00:00.000', '0:00:05.000']]\",\"['ok']\"\n"
        "../../outside/secret,http://x,\"[['0:00:00.000', '0:00:05.000']]\",\"['__import__(\\'os\\')']\"\n"
    )
    config = Panda70MSource(kind="panda70m", csv=str(root / "p.csv"), root=str(root / "videos"))
    rows = list(list_source_rows(config))
    assert [r["reject_reason"] for r in rows] == [None, "outside_input_roots"]
    assert rows[0]["uri"] == str(root / "videos" / "a.mp4")


def test_webdataset_member_names_cannot_chain_to_a_url(tmp_path, no_network):
    import io
    import tarfile

    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        for name in ("ok.mp4", "evil::memory:__x.mp4", "a::http://example/x.mp4"):
            info = tarfile.TarInfo(name)
            info.size = 5
            tar.addfile(info, io.BytesIO(b"video"))
    rows = read_shard(str(shard), "s", WebDatasetSource(kind="webdataset", shards=str(shard)))
    assert [r["reject_reason"] for r in rows] == [None, "unsafe_member_name", "unsafe_member_name"]
