"""Every operator produces exactly the columns it declares and needs only the ones it declares.

The operators run in pipeline order on real data (a generated video, tiny random-weight models
loaded through the real loading code); each one is called with only its declared input columns
(plus the ``reject_*`` columns every row carries).
"""

from __future__ import annotations

import importlib
import io
import json
import pkgutil
import tarfile

import numpy as np
import pytest

import operators
from operators.base import REJECT_COLUMNS, Operator, object_column
from operators.captions.short_caption import ShortCaption, ShortCaptionConfig
from operators.captions.text_embed import TextEmbed, TextEmbedConfig
from operators.dataset.writer import WriteShards
from operators.dedup.operator import SemanticDedup
from operators.keyframes.clip_encoder import ClipEncode
from operators.keyframes.clip_model import ClipConfig
from operators.keyframes.operator import SelectKeyframes
from operators.sources.common import make_row
from operators.sources.webdataset import ExpandShards, WebDatasetSource
from operators.video.clips import CutClips
from operators.video.duration_filter import DurationFilter
from operators.video.probe import ProbeVideo
from operators.video.sample import SampleFrames
from testing.samples import scene_frames, write_video
from testing.tiny_models import save_tiny_bert, save_tiny_clip, save_tiny_git


def all_operator_classes() -> set[type]:
    for module in pkgutil.walk_packages(operators.__path__, "operators."):
        if "test_server" not in module.name:
            importlib.import_module(module.name)
    found, todo = set(), [Operator]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("operators."):
                found.add(sub)
            todo.append(sub)
    return found


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    video = write_video(root / "cut.mp4", scene_frames(90, 160, 120, [(0, (200, 0, 0)), (45, (0, 0, 200))]), fps=15)
    shard = root / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("000.mp4", video.read_bytes()), ("000.json", json.dumps({"key": "000"}).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    clip = save_tiny_clip(root / "clip")
    return {
        "root": root,
        "video": video,
        "shard": shard,
        "ops": [
            ProbeVideo(),
            DurationFilter(),
            SampleFrames(),
            ShortCaption(ShortCaptionConfig(model=str(save_tiny_git(root / "git")), max_new_tokens=4)),
            TextEmbed(TextEmbedConfig(model=str(save_tiny_bert(root / "bert")))),
            SemanticDedup(),
            ClipEncode(ClipConfig(**clip, image_batch_size=8)),
            SelectKeyframes(output_dir=str(root / "out")),
            CutClips(output=str(root / "out")),
            WriteShards(output=str(root / "out")),
        ],
    }


def run_with_declared_inputs(op: Operator, full: dict) -> tuple[dict, dict]:
    given = {c: full[c] for c in (*op.input_columns, *REJECT_COLUMNS)}
    op.setup()
    out = op({k: v.copy() for k, v in given.items()})
    return given, out


def assert_exact(op: Operator, given: dict, out: dict) -> None:
    produced = set(out) - set(given)
    assert produced <= set(op.output_columns), f"{op.name} produced undeclared {produced - set(op.output_columns)}"
    assert set(op.output_columns) <= set(out), f"{op.name} did not produce {set(op.output_columns) - set(out)}"


def test_every_operator_in_pipeline_order(world):
    row = make_row("cut", "folder", str(world["video"]))
    full = {k: object_column([v]) for k, v in row.items()}
    for op in world["ops"]:
        given, out = run_with_declared_inputs(op, full)
        assert_exact(op, given, out)
        assert out["reject_reason"][0] is None, (op.name, out["reject_detail"][0])
        full.update({k: np.asarray(v) if not isinstance(v, np.ndarray) else v for k, v in out.items()
                     if k in op.output_columns})
    assert len(full["keyframe_paths"][0]) >= 2


def test_source_backend_and_shard_expansion(world):
    op = ShortCaption(ShortCaptionConfig(backend="source"))
    full = {"frames": object_column([None]), "source_caption": object_column(["A red then blue screen."]),
            **{c: object_column([None]) for c in REJECT_COLUMNS}}
    given, out = run_with_declared_inputs(op, full)
    assert_exact(op, given, out)
    shard_row = make_row("shard-000", "webdataset", str(world["shard"]))
    expand = ExpandShards(WebDatasetSource(kind="webdataset", shards=str(world["shard"])))
    given, out = run_with_declared_inputs(expand, {k: object_column([v]) for k, v in shard_row.items()})
    assert_exact(expand, given, out)
    assert list(out["video_id"]) == ["000"]


def test_the_contract_covers_every_operator(world):
    covered = {type(op) for op in world["ops"]} | {ExpandShards}
    covered |= {cls for cls in all_operator_classes() if cls.__name__ in CHECKED_ELSEWHERE}
    assert all_operator_classes() <= covered, all_operator_classes() - covered


#: Operators whose contract is checked in their own test module (they need a server).
CHECKED_ELSEWHERE = {"DiffCaptioner"}
