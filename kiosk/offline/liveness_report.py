"""ISO/IEC 30107-3 figures of passive liveness on a labelled spoof set: the engine behind `kiosk liveness-report`.

Terms (bona fide and attack presentations, PAI species, APCER, BPCER) as in
``kiosk.liveness_calibration``, the schema of the models/liveness.toml this writes.
Presentations where no face is found are not classified at all: they are counted, not
scored.

The arithmetic is plain functions on score arrays; ``score_presentations`` runs a scorer
(in `kiosk liveness-report`, the real detector and liveness model) over a labelled folder
(``spoof/labels.csv``) and is what reproduces the shipped figures.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.errors import ConfigError, InvalidImage, Undecidable
from kiosk.liveness_calibration import BpcerPoint, LivenessCalibration, PadFigures, SpeciesRate

# PAI species reported separately (ISO/IEC 30107-3 reports APCER per species), and the
# attack_type labels of spoof/labels.csv each one covers. A label not listed here stops
# the report: a new kind of attack needs a decision about its species.
SPECIES = {
    "print": ("print_handheld", "print_curved"),
    "screen_replay": ("screen_replay_phone", "screen_monitor", "screen_tablet"),
    "mask_or_cutout": ("print_cutout", "print_mask_eyes_cut", "cardboard_3d_mask"),
}
BONA_FIDE_LABEL = "real"
ATTACK_LABEL = "attack"
REPORTED_BPCERS = (0.05, 0.10)


def species_of(attack_type: str) -> str:
    for species, attack_types in SPECIES.items():
        if attack_type in attack_types:
            return species
    raise ConfigError(f"attack type {attack_type!r} belongs to no PAI species: add it to SPECIES")


def upper_bound_95(errors: int, trials: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound of an error rate seen ``errors`` times in ``trials``.

    With 0 of n it is 1 - 0.05 ** (1 / n), about 3 / n (the rule of three): 0 of 38 still
    allows a rate up to 7.6 %.
    """
    if trials == 0:
        return 1.0
    if errors >= trials:
        return 1.0

    def cdf(rate: float) -> float:
        # Each binomial term in logs: comb(3000, 400) alone overflows a float.
        log_rate, log_rest = math.log(rate) if rate > 0 else -math.inf, math.log1p(-rate)
        total = 0.0
        for k in range(errors + 1):
            log_comb = math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1)
            total += math.exp(log_comb + (k * log_rate if k else 0.0) + (trials - k) * log_rest)
        return total

    low, high = errors / trials, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        if cdf(mid) > 0.05:
            low = mid
        else:
            high = mid
    return high


def threshold_at_bpcer(bona_fide_scores: np.ndarray, target_bpcer: float) -> float:
    """Highest threshold t with #(bona fide < t) / N <= target_bpcer (live means score >= t)."""
    scores = np.sort(np.asarray(bona_fide_scores, dtype=np.float64))
    if len(scores) == 0:
        raise ValueError("no bona fide scores")
    allowed = math.floor(target_bpcer * len(scores) + 1e-9)
    return float(scores[min(allowed, len(scores) - 1)])


def pad_figures(bona_fide: np.ndarray, attacks: Mapping[str, np.ndarray], threshold: float) -> PadFigures:
    bona_fide = np.asarray(bona_fide, dtype=np.float64)
    rejected = int(np.count_nonzero(bona_fide < threshold))
    rates = []
    for species in SPECIES:
        scores = np.asarray(attacks.get(species, ()), dtype=np.float64)
        accepted = int(np.count_nonzero(scores >= threshold))
        rates.append(
            SpeciesRate(
                species=species,
                attacks=len(scores),
                accepted=accepted,
                apcer=accepted / len(scores) if len(scores) else float("nan"),
                apcer_upper_95=upper_bound_95(accepted, len(scores)),
            )
        )
    return PadFigures(
        threshold=threshold,
        bona_fide=len(bona_fide),
        bona_fide_rejected=rejected,
        bpcer=rejected / len(bona_fide) if len(bona_fide) else float("nan"),
        bpcer_upper_95=upper_bound_95(rejected, len(bona_fide)),
        species=tuple(rates),
    )


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Presentation:
    path: str
    label: str  # "real" or "attack"
    species: str  # "" for bona fide
    # P(live); None when no usable face was found.
    score: float | None


def read_spoof_labels(root: Path) -> list[tuple[str, str, str]]:
    """(path, label, species) of every row of ``root``/spoof/labels.csv."""
    with open(root / "spoof" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"path", "label", "attack_type"} <= set(rows[0]):
        raise ConfigError("spoof/labels.csv: expected columns path,label,attack_type")
    labelled = []
    for row in rows:
        label = row["label"].strip()
        if label not in (BONA_FIDE_LABEL, ATTACK_LABEL):
            raise ConfigError(f"spoof/labels.csv: unknown label {label!r} for {row['path']}")
        species = species_of(row["attack_type"].strip()) if label == ATTACK_LABEL else ""
        labelled.append((row["path"], label, species))
    return labelled


def score_presentations(
    score_file: Callable[[Path], float],
    root: Path,
    labelled: Iterable[tuple[str, str, str]],
    progress: Callable[[list], Iterable] = iter,
) -> list[Presentation]:
    """Score every labelled image with ``score_file`` (P(live) of its subject face as a live frame)."""
    presentations = []
    for path, label, species in progress(list(labelled)):
        try:
            score = score_file(root / path)
        except (Undecidable, InvalidImage):
            score = None
        presentations.append(Presentation(path, label, species, score))
    return presentations


def split_presentations(presentations: Sequence[Presentation]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Bona fide scores, and attack scores per species, of the presentations that were scored."""
    bona_fide = np.array([p.score for p in presentations if p.label == BONA_FIDE_LABEL and p.score is not None])
    attacks = {
        species: np.array([p.score for p in presentations if p.species == species and p.score is not None])
        for species in SPECIES
    }
    return bona_fide, attacks


def calibrate(
    presentations: Sequence[Presentation],
    threshold: float,
    model: str,
    data: str,
    created: str,
    rationale: str,
) -> LivenessCalibration:
    bona_fide, attacks = split_presentations(presentations)
    return LivenessCalibration(
        model=model,
        data=data,
        created=created,
        threshold=threshold,
        rationale=rationale,
        attacks_without_face=sum(p.score is None for p in presentations if p.label == ATTACK_LABEL),
        bona_fide_without_face=sum(p.score is None for p in presentations if p.label == BONA_FIDE_LABEL),
        shipped=pad_figures(bona_fide, attacks, threshold),
        at_bpcer=tuple(
            BpcerPoint(target, pad_figures(bona_fide, attacks, threshold_at_bpcer(bona_fide, target)))
            for target in REPORTED_BPCERS
        ),
    )


# --------------------------------------------------------------------------- output


def _figures_lines(table: str, figures: PadFigures) -> list[str]:
    lines = [
        f"threshold = {figures.threshold!r}",
        f"bona_fide = {figures.bona_fide}",
        f"bona_fide_rejected = {figures.bona_fide_rejected}",
        f"bpcer = {figures.bpcer:.6f}",
        f"bpcer_upper_95 = {figures.bpcer_upper_95:.6f}",
    ]
    for rate in figures.species:
        lines += [
            "",
            f"[[{table}.species]]",
            f'species = "{rate.species}"',
            f"attacks = {rate.attacks}",
            f"accepted = {rate.accepted}",
            f"apcer = {rate.apcer:.6f}",
            f"apcer_upper_95 = {rate.apcer_upper_95:.6f}",
        ]
    return lines


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def liveness_toml(calibration: LivenessCalibration) -> str:
    lines = [
        "# Written by `kiosk liveness-report --out`. Passive liveness: a live photo is accepted when",
        "# P(live) >= threshold. Figures per ISO/IEC 30107-3: BPCER on bona fide captures, APCER per",
        "# PAI species, each with its one-sided 95 % upper bound. Schema: kiosk/liveness_calibration.py.",
        f"model = {_quoted(calibration.model)}",
        f"data = {_quoted(calibration.data)}",
        f"created = {_quoted(calibration.created)}",
        f"threshold = {calibration.threshold!r}",
        f"rationale = {_quoted(calibration.rationale)}",
        f"attacks_without_face = {calibration.attacks_without_face}",
        f"bona_fide_without_face = {calibration.bona_fide_without_face}",
        "",
        "[shipped]",
        *_figures_lines("shipped", calibration.shipped),
    ]
    for point in calibration.at_bpcer:
        lines += ["", "[[at_bpcer]]", f"target_bpcer = {point.target_bpcer:g}", "", "[at_bpcer.figures]"]
        lines += _figures_lines("at_bpcer.figures", point.figures)
    return "\n".join(lines) + "\n"


def format_figures(title: str, figures: PadFigures) -> str:
    """One readable block: BPCER, then APCER per species, with counts and upper bounds."""
    lines = [
        f"{title}: threshold {figures.threshold:.6g}",
        f"  BPCER {figures.bpcer * 100:5.1f} % ({figures.bona_fide_rejected} of {figures.bona_fide} bona fide rejected;"
        f" 95 % upper bound {figures.bpcer_upper_95 * 100:.1f} %)",
    ]
    for rate in figures.species:
        lines.append(
            f"  APCER {rate.species:<15} {rate.apcer * 100:5.1f} % ({rate.accepted} of {rate.attacks} accepted;"
            f" 95 % upper bound {rate.apcer_upper_95 * 100:.1f} %)"
        )
    return "\n".join(lines)
