"""Test data for the dedup tests: unit vectors with planted near-duplicates, and the
brute-force greedy reference the index must reproduce."""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_unit(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    return unit(rng.standard_normal((n, d)))


def clustered(n: int, d: int, n_clusters: int, rng: np.random.Generator, spread=(0.5, 1.0)) -> np.ndarray:
    """Points around random centres; ``spread`` sets how far (noise norm / centre norm)."""
    centres = random_unit(n_clusters, d, rng).astype(np.float64)
    scale = rng.uniform(*spread, size=n_clusters)
    which = rng.integers(0, n_clusters, size=n)
    noise = rng.standard_normal((n, d)) / np.sqrt(d)
    return unit(centres[which] + scale[which, None] * noise)


def plant_near_duplicates(
    x: np.ndarray, fraction: float, rng: np.random.Generator, noise=(0.0, 0.7)
) -> np.ndarray:
    """Replace a ``fraction`` of rows with noisy copies of earlier rows (cosine ~ 1/sqrt(1+e^2)),
    some within a few rows (same batch), some far back."""
    x = x.copy()
    d = x.shape[1]
    for i in rng.choice(np.arange(1, len(x)), size=int(fraction * len(x)), replace=False):
        source = i - 1 - int(rng.integers(0, 4)) if rng.random() < 0.3 else int(rng.integers(0, i))
        e = rng.uniform(*noise)
        x[i] = unit(x[max(source, 0)] + e * rng.standard_normal(d) / np.sqrt(d))
    return x


def greedy_reference(x: np.ndarray, threshold: float):
    """Brute force: (kept, nearest index or -1, best similarity or nan), float64 throughout."""
    x64 = x.astype(np.float64)
    n = len(x)
    kept = np.zeros(n, dtype=bool)
    nearest = np.full(n, -1)
    best = np.full(n, np.nan)
    pool = np.empty_like(x64)
    pool_index: list[int] = []
    for i in range(n):
        if pool_index:
            sims = pool[: len(pool_index)] @ x64[i]
            b = int(np.argmax(sims))
            nearest[i], best[i] = pool_index[b], sims[b]
        if not pool_index or best[i] < threshold:
            kept[i] = True
            pool[len(pool_index)] = x64[i]
            pool_index.append(i)
    return kept, nearest, best


def decide_in_batches(index, x: np.ndarray, batch_size: int, offset: int = 0):
    decisions = []
    for s in range(0, len(x), batch_size):
        ids = [f"v{i}" for i in range(offset + s, offset + min(s + batch_size, len(x)))]
        decisions.extend(index.decide(ids, x[s : s + batch_size]))
    return decisions
