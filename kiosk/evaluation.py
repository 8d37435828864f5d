"""Scoring labelled pairs with the real pipeline: the engine behind `kiosk evaluate` and `kiosk calibrate`.

Each distinct image is embedded once; every pair is then a dot product. Images whose
face cannot be found get no score, and are counted rather than silently dropped.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.errors import InvalidImage, Undecidable
from kiosk.pipeline.compare import cosine_similarity
from kiosk.pipeline.types import Embedding
from kiosk.pipeline.verifier import Verifier


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    same: bool
    subset: str = ""


@dataclass(frozen=True)
class ScoredPair:
    pair: Pair
    score: float | None


def read_pairs(path: Path) -> list[Pair]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and not {"a", "b", "same"} <= set(rows[0]):
        raise ValueError(f"{path}: expected columns a,b,same (optionally subset)")
    return [Pair(r["a"], r["b"], r["same"].strip() in ("1", "true", "True"), r.get("subset", "") or "") for r in rows]


def embed_images(
    verifier: Verifier, root: Path, paths: Iterable[str], progress: Callable[[Iterable[str]], Iterable[str]] = iter
) -> dict[str, Embedding | None]:
    """Embedding of each image's subject face (None when no usable face), quality not gated."""
    embeddings: dict[str, Embedding | None] = {}
    for relative in progress(sorted(set(paths))):
        try:
            embeddings[relative] = verifier.embed_file(root / relative)
        except (Undecidable, InvalidImage):
            embeddings[relative] = None
    return embeddings


def score_pairs(pairs: list[Pair], embeddings: dict[str, Embedding | None]) -> list[ScoredPair]:
    scored = []
    for pair in pairs:
        a, b = embeddings.get(pair.a), embeddings.get(pair.b)
        scored.append(ScoredPair(pair, None if a is None or b is None else cosine_similarity(a, b)))
    return scored


def split_scores(scored: list[ScoredPair]) -> tuple[np.ndarray, np.ndarray]:
    genuine = np.array([s.score for s in scored if s.pair.same and s.score is not None])
    impostor = np.array([s.score for s in scored if not s.pair.same and s.score is not None])
    return genuine, impostor


def person_of(path: str) -> str:
    """Identity of an image path in the shared layout: its folder, or for spoof/ prints the name prefix."""
    folder, _, name = path.partition("/")
    if folder == "spoof":
        # spoof/attack/nuaa_s01_... is a print of person nuaa__s01's own portrait.
        parts = name.split("/")[-1].split("_")
        return f"{parts[0]}__{parts[1]}" if len(parts) > 2 else name
    return folder


def cross_person_impostors(pairs: list[Pair]) -> list[Pair]:
    """Every pair of images of two different people within the same subset, as impostor pairs.

    A CSV's few hundred impostor pairs cannot measure an FMR of 1e-3; all cross-person
    pairs of its images can. Pairs stay inside a subset so East-Asian faces are compared
    with East-Asian faces, the hard case, never with an easy cross-group face.
    """
    images_by_subset: dict[str, set[str]] = {}
    for pair in pairs:
        images_by_subset.setdefault(pair.subset, set()).update((pair.a, pair.b))
    impostors = []
    for subset, images in sorted(images_by_subset.items()):
        ordered = sorted(images)
        for i, a in enumerate(ordered):
            for b in ordered[i + 1 :]:
                if person_of(a) != person_of(b):
                    impostors.append(Pair(a, b, False, subset))
    return impostors


def wipe(embeddings: dict[str, Embedding | None]) -> None:
    for embedding in embeddings.values():
        if embedding is not None:
            embedding.fill(0)
    embeddings.clear()
