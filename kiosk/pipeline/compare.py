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


def fuse_weighted(embeddings: Sequence[Embedding], weights: Sequence[float]) -> Embedding:
    """Weighted mean of normalised embeddings, renormalised; weights <= 0 drop a frame.

    Measured against the plain mean for Verify's live photos and not chosen (see
    ``verifier.fuse_best_frames``); kept for sessions and tools that rank frames.

    Falls back to the plain mean when no weight is positive (never an empty template).
    """
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if len(embeddings) == 0:
        raise ValueError("no embeddings to fuse")
    if not np.isfinite(w).all() or w.sum() <= 0.0:
        return fuse_embeddings(embeddings)
    stacked = np.stack(embeddings).astype(np.float64)
    return l2_normalise((stacked * w[:, None]).sum(axis=0).astype(np.float32))


def best_frames(utilities: Sequence[float], usable: Sequence[bool], most: int) -> tuple[int, ...]:
    """Indices of the ``most`` usable frames of highest utility, best first (ties: earlier frame).

    Frames that failed a capture check (mid-blink, motion, turned away) are never chosen;
    an empty result means no frame was usable.
    """
    if len(utilities) != len(usable):
        raise ValueError("one utility and one usable flag per frame")
    candidates = [i for i, ok in enumerate(usable) if ok]
    candidates.sort(key=lambda i: (-utilities[i], i))
    return tuple(candidates[: max(0, most)])


# An ID photo whose eyes are fewer than this many pixels apart is chip-sized (a 102x126
# chip portrait measures 22-30 px): its face is rebuilt from few, hard-compressed pixels.
CHIP_SIZED_INTER_EYE_PX = 32.0
# Gaussian sigma (px of the 112x112 aligned crop) applied to both aligned faces of a
# comparison with a chip-sized ID photo. JPEG q30 is the chip path's largest loss (chip
# copies at q95 match 76 % of NUAA+pigface genuine pairs, at q30 44 %); smoothing only
# the chip loses more (sigma 0.8: 35 %), smoothing both sides alike recovers part of it
# (NUAA 48 -> 64 %, pigface 36 -> 39 %; K-pop chip impostors stay below the threshold,
# highest 0.617). Larger sigma (1.5) let a K-pop impostor through.
CHIP_MATCH_SIGMA = 1.0


def chip_sized(inter_eye_px: float) -> bool:
    return inter_eye_px < CHIP_SIZED_INTER_EYE_PX


def matched_degradation(aligned: np.ndarray) -> np.ndarray:
    """The aligned face as both sides of a chip comparison see it (see CHIP_MATCH_SIGMA)."""
    import cv2

    return cv2.GaussianBlur(aligned, (0, 0), CHIP_MATCH_SIGMA)
