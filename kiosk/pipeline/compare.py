"""Similarity of two embeddings, and fusion of several live embeddings into one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kiosk.pipeline.types import Embedding


def l2_normalise(vector: np.ndarray) -> Embedding:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        return np.zeros_like(vector, dtype=np.float32)
    return (vector / norm).astype(np.float32)


def cosine_similarity(a: Embedding, b: Embedding) -> float:
    """Cosine of two L2-normalised embeddings, in [-1, 1]."""
    return float(np.clip(np.dot(a, b), -1.0, 1.0))


def fuse_embeddings(embeddings: Sequence[Embedding]) -> Embedding:
    """Mean of normalised embeddings, renormalised: one template from several live frames."""
    return l2_normalise(np.mean(np.stack(embeddings), axis=0))
