"""Operating points from measured scores: threshold at a target false-match rate, ROC figures.

A threshold is never a magic number: it is the lowest similarity that keeps the
measured false-match rate on impostor pairs at or below the target. Plain functions on
score arrays, so the arithmetic is tested on synthetic score sets. The engine behind
`kiosk calibrate` and `kiosk evaluate`, with the writer of the calibration file the
service loads (``kiosk.calibration``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kiosk.calibration import CalibratedPoint, Calibration

REPORTED_FMRS = (1e-2, 1e-3, 1e-4)
# Rule of three: with N impostor pairs and none accepted, the 95 % upper bound on the FMR
# is 3/N, so a target FMR is measurable only from about 3/FMR impostor pairs.
RULE_OF_THREE = 3.0


def impostors_needed(target_fmr: float) -> int:
    """Fewest impostor pairs that can measure ``target_fmr`` (rule of three)."""
    return math.ceil(RULE_OF_THREE / target_fmr - 1e-9)


def unmeasurable(impostor_pairs: int, fmrs: tuple[float, ...]) -> str:
    """Why these impostor pairs cannot measure some of ``fmrs`` ("" when they can measure all)."""
    short = [fmr for fmr in sorted(fmrs, reverse=True) if impostor_pairs < impostors_needed(fmr)]
    if not short:
        return ""
    needs = ", ".join(f"FMR {fmr:g} (needs >= {impostors_needed(fmr)})" for fmr in short)
    return (
        f"{impostor_pairs} impostor pairs cannot measure {needs}: with no false match in "
        f"N impostor pairs the FMR is only known to be below 3/N (rule of three)"
    )


def threshold_at_fmr(impostor_scores: np.ndarray, target_fmr: float) -> float:
    """Smallest threshold t with #(impostor >= t) / N <= target_fmr (MATCH means score >= t)."""
    scores = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    if len(scores) == 0:
        raise ValueError("no impostor scores")
    allowed = math.floor(target_fmr * len(scores) + 1e-9)
    if allowed >= len(scores):
        return float(scores[-1])
    # Just above the (allowed+1)-th highest impostor score: that one and all below are rejected.
    return float(np.nextafter(scores[allowed], np.inf))


def match_rate(scores: np.ndarray, threshold: float) -> float:
    scores = np.asarray(scores)
    return float(np.mean(scores >= threshold)) if len(scores) else float("nan")


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a genuine pair outscores an impostor pair (ties count half)."""
    ordered = np.sort(np.asarray(impostor, dtype=np.float64))
    genuine = np.asarray(genuine, dtype=np.float64)
    below = np.searchsorted(ordered, genuine, side="left")
    not_above = np.searchsorted(ordered, genuine, side="right")
    wins = below.sum() + 0.5 * (not_above - below).sum()
    return float(wins / (len(genuine) * len(ordered)))


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) where false-match and false-non-match rates cross."""
    genuine = np.sort(np.asarray(genuine, dtype=np.float64))
    impostor = np.sort(np.asarray(impostor, dtype=np.float64))
    candidates = np.unique(np.concatenate([genuine, impostor]))
    # With MATCH meaning score >= t: FMR(t) = share of impostors >= t, FNMR(t) = share of genuine < t.
    fmr = 1.0 - np.searchsorted(impostor, candidates, side="left") / len(impostor)
    fnmr = np.searchsorted(genuine, candidates, side="left") / len(genuine)
    i = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[i] + fnmr[i]) / 2), float(candidates[i])


@dataclass(frozen=True)
class RateAtFmr:
    target_fmr: float
    threshold: float
    tar: float
    measured_fmr: float
    genuine_pairs: int
    impostor_pairs: int
    # Rule of three: with N impostors and none accepted, the 95 % upper bound on FMR is 3/N.
    enough_impostors: bool


@dataclass(frozen=True)
class ScoreReport:
    genuine_pairs: int
    impostor_pairs: int
    auc: float
    eer: float
    eer_threshold: float
    at_fmr: tuple[RateAtFmr, ...]


def score_report(genuine: np.ndarray, impostor: np.ndarray, fmrs: tuple[float, ...] = REPORTED_FMRS) -> ScoreReport:
    genuine = np.asarray(genuine, dtype=np.float64)
    impostor = np.asarray(impostor, dtype=np.float64)
    eer, eer_threshold = equal_error_rate(genuine, impostor)
    rates = []
    for fmr in fmrs:
        threshold = threshold_at_fmr(impostor, fmr)
        rates.append(
            RateAtFmr(
                target_fmr=fmr,
                threshold=threshold,
                tar=match_rate(genuine, threshold),
                measured_fmr=match_rate(impostor, threshold),
                genuine_pairs=len(genuine),
                impostor_pairs=len(impostor),
                enough_impostors=len(impostor) >= impostors_needed(fmr),
            )
        )
    return ScoreReport(len(genuine), len(impostor), roc_auc(genuine, impostor), eer, eer_threshold, tuple(rates))


def strictest_operating_points(
    genuine: np.ndarray,
    impostor: np.ndarray,
    impostor_by_subset: dict[str, np.ndarray],
    fmrs: tuple[float, ...],
) -> tuple[CalibratedPoint, ...]:
    """Per target FMR, the highest threshold among the pooled set and every subset that can measure it.

    A threshold that meets the FMR on the pooled impostors can still exceed it on one
    population (East-Asian impostors score higher than LFW ones); taking the strictest
    subset keeps the promise on each population with enough impostor pairs (rule of three).
    A smaller target FMR never gets a lower threshold than a larger one: a subset too
    small to measure 1e-4 still bounds it by what it measured at 1e-3.
    """
    points = []
    floor = -1.0
    floor_from = ""
    for fmr in sorted(fmrs, reverse=True):
        candidates = [("all pairs", impostor)] + [
            (name, scores)
            for name, scores in sorted(impostor_by_subset.items())
            if len(scores) >= impostors_needed(fmr)
        ]
        name, scores = max(candidates, key=lambda c: threshold_at_fmr(c[1], fmr))
        threshold = threshold_at_fmr(scores, fmr)
        notes = [f"threshold set by {name} ({len(scores)} impostor pairs)"]
        if threshold < floor:
            threshold = floor
            notes = [f"threshold raised to that of {floor_from}, so that a smaller FMR is never a lower threshold"]
        floor, floor_from = threshold, f"FMR {fmr:g}"
        if len(impostor) < impostors_needed(fmr):
            notes.append(f"only {len(impostor)} impostor pairs: FMR {fmr:g} is extrapolated, not measured")
        points.append(
            CalibratedPoint(
                target_fmr=fmr,
                threshold=threshold,
                measured_fmr=match_rate(impostor, threshold),
                tar=match_rate(genuine, threshold),
                impostor_pairs=len(impostor),
                genuine_pairs=len(genuine),
                note="; ".join(notes),
            )
        )
    return tuple(points)


def calibration_toml(calibration: Calibration) -> str:
    lines = [
        "# Written by `kiosk calibrate`; thresholds are cosine similarities (MATCH when similarity >= threshold).",
        f'embedder = "{calibration.embedder}"',
        f'embedder_sha256 = "{calibration.embedder_sha256}"',
        f'pairs = "{calibration.pairs}"',
        f'created = "{calibration.created}"',
        f"auc = {calibration.auc:.6f}",
        f"eer = {calibration.eer:.6f}",
    ]
    for p in calibration.operating_point:
        lines += [
            "",
            "[[operating_point]]",
            f"target_fmr = {p.target_fmr:g}",
            f"threshold = {p.threshold!r}",
            f"measured_fmr = {p.measured_fmr:.6g}",
            f"tar = {p.tar:.6f}",
            f"impostor_pairs = {p.impostor_pairs}",
            f"genuine_pairs = {p.genuine_pairs}",
            f'note = "{p.note}"',
        ]
    return "\n".join(lines) + "\n"
