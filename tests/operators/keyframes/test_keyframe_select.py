"""Every keyframe rule on synthetic embedding sequences with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from operators.keyframes.select import KeyframeConfig, is_blank, select_keyframes


def unit(angle_deg: float) -> np.ndarray:
    """A 2-D unit vector; cos(a - b) is the similarity of two such vectors."""
    a = np.deg2rad(angle_deg)
    return np.array([np.cos(a), np.sin(a)], dtype=np.float32)


def seq(*angles: float) -> np.ndarray:
    return np.stack([unit(a) for a in angles])


def times(n: int, step: float = 2.0) -> list[float]:
    return [i * step for i in range(n)]


# cos(20 deg) = 0.940 (same scene at 0.93), cos(25 deg) = 0.906 (new keyframe at 0.93).
def test_first_frame_is_always_a_keyframe_and_identical_frames_add_nothing() -> None:
    cfg = KeyframeConfig(keep_last="min_gap", min_gap_s=100.0)
    assert select_keyframes(seq(0, 0, 0, 0), times(4), cfg) == [0]
    assert select_keyframes(seq(0, 0, 0, 0), times(4), KeyframeConfig()) == [0, 3]


def test_threshold_is_strict_below() -> None:
    cfg = KeyframeConfig(keep_last="min_gap", min_gap_s=100.0)
    assert select_keyframes(seq(0, 25, 25), times(3), cfg) == [0, 1]
    assert select_keyframes(seq(0, 20, 20), times(3), cfg) == [0]
    exact = np.array([[1.0, 0.0], [0.93, np.sqrt(1 - 0.93**2)]], dtype=np.float32)
    assert select_keyframes(exact, times(2), cfg.model_copy(update={"threshold": 0.92})) == [0]
    assert select_keyframes(exact, times(2), cfg.model_copy(update={"threshold": 0.94})) == [0, 1]


def test_compares_to_latest_keyframe_not_previous_frame() -> None:
    # A slow pan: each step is 10 deg (0.985 to the previous frame) but drift accumulates.
    cfg = KeyframeConfig(keep_last="min_gap", min_gap_s=100.0)
    assert select_keyframes(seq(0, 10, 20, 30, 40, 50, 60), times(7), cfg) == [0, 3, 6]


def test_keep_last_always_vs_min_gap() -> None:
    emb = seq(0, 40, 45, 45)  # keyframes 0, 1; frames 2 and 3 are close to keyframe 1
    ts = [0.0, 2.0, 3.0, 3.5]
    assert select_keyframes(emb, ts, KeyframeConfig(keep_last="always")) == [0, 1, 3]
    assert select_keyframes(emb, ts, KeyframeConfig(keep_last="min_gap", min_gap_s=2.0)) == [0, 1]
    assert select_keyframes(emb, ts, KeyframeConfig(keep_last="min_gap", min_gap_s=1.5)) == [0, 1, 3]
    # Already a keyframe: never added twice.
    assert select_keyframes(seq(0, 40), [0.0, 2.0], KeyframeConfig(keep_last="always")) == [0, 1]


def test_max_keyframes_keeps_the_most_distinct() -> None:
    # Keyframe steps: 0 -> 90 (very distinct), 90 -> 120 (30 deg, least), 120 -> 180 (60 deg).
    emb = seq(0, 90, 120, 180)
    cfg = KeyframeConfig(keep_last="min_gap", min_gap_s=100.0)
    assert select_keyframes(emb, times(4), cfg) == [0, 1, 2, 3]
    assert select_keyframes(emb, times(4), cfg.model_copy(update={"max_keyframes": 3})) == [0, 1, 3]
    # After dropping 120, 180 is measured against 90: 90 deg, as far as 90 is from 0; ties drop the later.
    assert select_keyframes(emb, times(4), cfg.model_copy(update={"max_keyframes": 2})) == [0, 1]
    assert select_keyframes(emb, times(4), cfg.model_copy(update={"max_keyframes": 1})) == [0]


def test_max_keyframes_keeps_last_when_keep_last_always() -> None:
    emb = seq(0, 90, 120, 130)  # 130 is the last frame, kept by keep_last="always"
    cfg = KeyframeConfig(keep_last="always", max_keyframes=2)
    assert select_keyframes(emb, times(4), cfg) == [0, 3]


def test_skip_leading_blank_keeps_original_timestamps() -> None:
    rng = np.random.default_rng(0)
    black = np.zeros((32, 48, 3), dtype=np.uint8)
    noisy_black = np.clip(black + rng.normal(0, 2, black.shape), 0, 255).astype(np.uint8)
    content = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    frames = [black, noisy_black, content, content, content]
    emb = seq(0, 0, 60, 60, 61)
    ts = [0.0, 2.0, 4.0, 6.0, 8.0]
    cfg = KeyframeConfig(skip_leading_blank=True, keep_last="min_gap")
    picked = select_keyframes(emb, ts, cfg, frames)
    assert picked == [2, 4]
    assert [ts[k] for k in picked] == [4.0, 8.0]  # not shifted back to 0.0
    # Off: frame 0 is the first keyframe even though it is black.
    assert select_keyframes(emb, ts, cfg.model_copy(update={"skip_leading_blank": False}), frames)[0] == 0
    # All blank: frame 0 still comes out.
    all_blank = cfg.model_copy(update={"min_gap_s": 100.0})
    assert select_keyframes(emb[:2], ts[:2], all_blank, [black, black]) == [0]
    with pytest.raises(ValueError):
        select_keyframes(emb, ts, cfg)


def test_is_blank() -> None:
    assert is_blank(np.full((100, 100, 3), (200, 30, 30), dtype=np.uint8))
    img = np.zeros((100, 100, 3), dtype=np.uint8)
    img[40:60] = 255
    assert not is_blank(img)


def test_single_frame_and_empty_video() -> None:
    assert select_keyframes(seq(0), [0.0], KeyframeConfig()) == [0]
    assert select_keyframes(np.zeros((0, 4), dtype=np.float32), [], KeyframeConfig()) == []


def test_two_identical_frames() -> None:
    assert select_keyframes(seq(5, 5), [0.0, 2.0], KeyframeConfig(keep_last="always")) == [0, 1]
    assert select_keyframes(seq(5, 5), [0.0, 1.0], KeyframeConfig(keep_last="min_gap")) == [0]
    assert select_keyframes(seq(5, 5), [0.0, 2.0], KeyframeConfig(keep_last="min_gap")) == [0, 1]


def test_embeddings_need_not_be_normalized_and_shapes_must_match() -> None:
    emb = seq(0, 40) * np.array([[3.0], [0.5]], dtype=np.float32)
    assert select_keyframes(emb, [0.0, 2.0], KeyframeConfig(keep_last="min_gap", min_gap_s=9)) == [0, 1]
    with pytest.raises(ValueError):
        select_keyframes(emb, [0.0], KeyframeConfig())


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError):
        KeyframeConfig(keep_last="sometimes")
    with pytest.raises(ValueError):
        KeyframeConfig(max_keyframes=0)
    with pytest.raises(ValueError):
        KeyframeConfig(treshold=0.9)
