from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from operators.base import apply_to_live_rows
from operators.captions import ShortCaption, ShortCaptionConfig, one_sentence
from operators.captions.frames import frame_grid, uniform_indices
from operators.models import ModelLoadError
from testing.batches import make_batch


def _caption(model: Path, **overrides) -> ShortCaption:
    op = ShortCaption(ShortCaptionConfig(model=str(model), max_new_tokens=6, **overrides))
    op.setup()
    return op


def test_uniform_indices_pick_eight_spread_frames() -> None:
    picks = uniform_indices(60, 8)
    assert picks == [3, 11, 18, 26, 33, 41, 48, 56]
    assert len(set(picks)) == 8 and picks == sorted(picks)
    assert uniform_indices(5, 8) == [0, 1, 2, 3, 4]  # fewer than wanted: all of them
    assert uniform_indices(3, 6, exact=True) == [0, 0, 1, 1, 2, 2]  # fixed-size models: repeats
    assert uniform_indices(9, 1) == [4]  # a single frame is the middle one
    assert uniform_indices(0, 8) == []


def test_frame_grid_tiles_frames_of_any_size() -> None:
    frames = [np.full((4, 6, 3), i, np.uint8) for i in range(7)] + [np.zeros((8, 8, 3), np.uint8)]
    grid = frame_grid(frames)
    assert grid.shape == (8, 24, 3)  # 8 frames -> 4 columns x 2 rows of 4 x 6 tiles
    assert grid[4, 6, 0] == 5


def test_one_sentence() -> None:
    assert one_sentence("  a man   rides a horse. Then he stops.") == "A man rides a horse."
    assert one_sentence("a dog on a beach") == "A dog on a beach."
    assert one_sentence("Is it raining?") == "Is it raining?"
    assert one_sentence("   ") == ""
    assert one_sentence(None) == ""


def test_git_video_captioner_captions_a_batch(tiny_git_video: Path) -> None:
    op = _caption(tiny_git_video)
    # GIT-VATEX style: frames go in as [B, T, C, H, W], T from the model config, not num_frames.
    assert op.captioner.layout == "video" and op.captioner.frame_count == 6
    out = apply_to_live_rows(op, make_batch([10, 3, 8]))
    assert set(out) >= {"short_caption", *op.output_columns}
    for caption in out["short_caption"]:
        assert isinstance(caption, str) and len(caption) > 1 and caption.endswith(".")
    assert all(reason is None for reason in out.get("reject_reason", [None] * 3))


def test_batching_gives_the_same_captions(tiny_git_video: Path) -> None:
    together = _caption(tiny_git_video, batch_size=3)(make_batch([10, 3, 8]))["short_caption"]
    one_by_one = _caption(tiny_git_video, batch_size=1)(make_batch([10, 3, 8]))["short_caption"]
    assert list(together) == list(one_by_one)


def test_vlm_captioner_uses_chat_template_and_prompt(tiny_llava: Path) -> None:
    op = _caption(tiny_llava, backend="hf_vlm", vlm_input="images", batch_size=3)
    prompt = op.captioner._prompt_text(2)
    assert (
        prompt.count("<image>") == 2
        and "Please faithfully summarize the following video in one sentence." in prompt
    )
    together = op(make_batch([10, 3, 8]))["short_caption"]
    assert all(isinstance(c, str) and len(c) > 1 for c in together)
    # Left padding: a caption does not depend on the other videos in its batch.
    alone = _caption(tiny_llava, backend="hf_vlm", vlm_input="images", batch_size=1)(make_batch([10, 3, 8]))
    assert list(alone["short_caption"]) == list(together)


@pytest.mark.parametrize("layout", ["auto", "middle"])
def test_image_captioner_layouts(tiny_git_image: Path, layout: str) -> None:
    op = _caption(tiny_git_image, frame_layout=layout)
    assert op.captioner.layout == ("grid" if layout == "auto" else "middle")
    out = op(make_batch([10, 2]))
    assert all(isinstance(c, str) and c for c in out["short_caption"])


def test_video_layout_needs_temporal_embeddings(tiny_git_image: Path) -> None:
    with pytest.raises(ValueError, match="temporal"):
        _caption(tiny_git_image, frame_layout="video")


def test_bad_model_path_fails_at_setup_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    start = time.monotonic()
    with pytest.raises(ModelLoadError, match="no-such-model"):
        ShortCaption(ShortCaptionConfig(model=str(missing))).setup()
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(ModelLoadError, match="empty-model"):
        ShortCaption(ShortCaptionConfig(model=str(tmp_path / "empty-model"))).setup()
    assert time.monotonic() - start < 10


def test_source_backend_uses_source_captions_and_rejects_rows_without() -> None:
    op = ShortCaption(ShortCaptionConfig(backend="source"))
    assert not op.stateful and op.resources.num_gpus == 0
    op.setup()
    batch = make_batch([2, 2, 2], ["A cat  sleeps on a sofa. ", None, " "])
    out = apply_to_live_rows(op, batch)
    assert out["short_caption"][0] == "A cat sleeps on a sofa."
    assert out["short_caption"][1] is None and out["short_caption"][2] is None
    assert list(out["reject_reason"]) == [None, "no_source_caption", "no_source_caption"]
    assert out["reject_stage"][1] == "short_caption"


def test_model_backends_ask_for_a_gpu() -> None:
    op = ShortCaption(ShortCaptionConfig())
    assert op.stateful and op.resources.num_gpus == 1


def test_prefer_source_caption_only_runs_the_model_where_needed(tiny_git_video: Path) -> None:
    op = _caption(tiny_git_video, prefer_source_caption=True)
    out = op(make_batch([4, 4], ["Given caption.", None]))
    assert out["short_caption"][0] == "Given caption."
    assert isinstance(out["short_caption"][1], str) and out["short_caption"][1] != "Given caption."


class _Stub:
    frame_count, exact_frames = 8, False

    def __init__(self, texts: list[str]) -> None:
        self.texts, self.seen = texts, []

    def caption(self, videos: list[list[np.ndarray]]) -> list[str]:
        self.seen.append([len(frames) for frames in videos])
        return self.texts[: len(videos)]


def test_empty_output_missing_frames_and_bad_jpegs_are_rejected() -> None:
    op = ShortCaption(ShortCaptionConfig(batch_size=4))
    op.captioner = _Stub(["  ", "a dog runs"])
    batch = make_batch([12, 0, 3, 2])
    batch["frames"][3] = [b"not a jpeg", b"nor this"]
    out = apply_to_live_rows(op, batch)
    assert op.captioner.seen == [[8, 3]]  # 8 of 12 frames, all 3 of 3; bad rows never reach the model
    assert list(out["reject_reason"]) == ["empty_caption", "no_frames", None, "bad_frame"]
    assert out["short_caption"][2] == "A dog runs."


def test_panda_student_missing_install_is_a_clear_error(tmp_path: Path) -> None:
    from operators.captions.panda_student import PandaStudentNotInstalled

    with pytest.raises(
        PandaStudentNotInstalled, match=r"panda_student\.repo is not set.*docs/panda_student\.md"
    ):
        ShortCaption(ShortCaptionConfig(backend="panda_student")).setup()
    config = ShortCaptionConfig(backend="panda_student", panda_student={"repo": str(tmp_path)})
    with pytest.raises(PandaStudentNotInstalled, match="no captioning/video_llama package"):
        ShortCaption(config).setup()


def test_panda_student_reports_missing_weights_and_requirements(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))  # the adapter puts the clone on sys.path
    from operators.captions.panda_student import PandaStudentNotInstalled

    package = tmp_path / "captioning" / "video_llama"
    (package / "common").mkdir(parents=True)
    (package / "__init__.py").write_text("import a_requirement_that_is_not_installed\n")
    config = ShortCaptionConfig(backend="panda_student", panda_student={"repo": str(tmp_path)})
    with pytest.raises(PandaStudentNotInstalled, match="eval config not found"):
        ShortCaption(config).setup()
    for name in ("eval_configs/panda70M_eval.yaml", "checkpoint/checkpoint_best.pth"):
        (tmp_path / "captioning" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "captioning" / name).write_text("")
    (tmp_path / "captioning" / "vicuna_weights" / "vicuna-7b-v0").mkdir(parents=True)
    with pytest.raises(PandaStudentNotInstalled, match="a_requirement_that_is_not_installed"):
        ShortCaption(config).setup()
