"""Scoring labelled pairs with the real pipeline: the engine behind `kiosk evaluate` and `kiosk calibrate`.

Each distinct image is embedded once; every pair is then a dot product. Images whose
face cannot be found get no score, and are counted rather than silently dropped.

Both images of a pair go through the ID-photo detection path (``Verifier.embed_file``:
the photo padded by a margin, a relaxed second detector pass, no second-face refusal),
so news photos with bystanders still get a score. Verify detects its live photos on the
live path instead (no padding, scaled to the profile's ``max_input_side``, a second face
refused). MTCNN then places the landmarks slightly differently, the aligned crop moves
by a pixel or so, and the similarity differs: 0.7709 here against 0.7762 from Verify
for Martin_Scorsese_0002/0003. Over 25 genuine pairs per subset the gap was median
0.005-0.016, at most 0.027 (webcam), 0.031 (cnceleb), 0.046 (LFW) and 0.071 (K-pop).
The shipped thresholds were computed on this (evaluation) path;
tests/integration/test_ops.py pins the cause.
"""

from __future__ import annotations

import csv
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kiosk.errors import InvalidImage, InvalidRequest, Undecidable
from kiosk.offline.chip import chip_photo
from kiosk.pipeline.analysis import embed_photo
from kiosk.pipeline.compare import cosine_similarity
from kiosk.pipeline.decode import decode_image
from kiosk.pipeline.scratch import Scratch
from kiosk.pipeline.subject import find_subject_face
from kiosk.pipeline.types import Embedding, ImageRole
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


SAME_VALUES = {"1": True, "true": True, "True": True, "0": False, "false": False, "False": False}


def read_pairs(path: Path) -> list[Pair]:
    """Pairs of a CSV (columns a,b,same[,subset]), or of every *.csv in a folder.

    In a folder such as the shared ``pairs_by_subset/``, a file's rows without a subset
    column take the file's name as their subset (``kpop.csv`` -> ``kpop``), so the
    per-population figures and thresholds of `kiosk calibrate` need no hand-made CSV.
    Every problem with the file is an :class:`InvalidRequest` naming the file and row.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.csv"))
        if not files:
            raise InvalidRequest(f"{path}: no *.csv pair files in this folder")
        return [pair for file in files for pair in _read_pair_file(file, default_subset=file.stem)]
    return _read_pair_file(path, default_subset="")


def _read_pair_file(path: Path, default_subset: str) -> list[Pair]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise InvalidRequest(f"{path}: no such pairs file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InvalidRequest(f"{path}: cannot read pairs: {e}") from None
    if not rows:
        raise InvalidRequest(f"{path}: no pairs (expected a header a,b,same[,subset] and one row per pair)")
    if not {"a", "b", "same"} <= set(rows[0]):
        found = ",".join(map(str, rows[0]))
        raise InvalidRequest(f"{path}: expected columns a,b,same (optionally subset), found {found}")
    pairs = []
    for line, row in enumerate(rows, start=2):
        same = SAME_VALUES.get((row["same"] or "").strip())
        if not row["a"] or not row["b"] or same is None:
            raise InvalidRequest(f"{path}, line {line}: expected two image paths and same = 1 or 0")
        pairs.append(Pair(row["a"], row["b"], same, (row.get("subset") or default_subset).strip()))
    return pairs


def embed_images(
    verifier: Verifier,
    root: Path,
    paths: Iterable[str],
    progress: Callable[[list], Iterable] = iter,
    workers: int = 1,
    embed: Callable[[Path], Embedding] | None = None,
) -> dict[str, Embedding | None]:
    """Embedding of each image's subject face (None when no usable face), quality not gated.

    ``workers`` images are analysed at once (onnxruntime and OpenCV release the GIL): with
    a verifier of one onnxruntime thread per call (``Verifier.load(threads_per_call=1)``),
    two workers embedded 230 LFW images in 0.61x the time of one at a time on two threads
    (2-core x86, quiet: 5.7 s against 9.3 s). Results come back in path order, so
    ``progress`` counts finished images. ``embed`` replaces ``verifier.embed_file`` (the
    chip-photo scoring of ``chip_scored_pairs``).
    """
    if not root.is_dir():
        raise InvalidRequest(f"{root}: --root is not a folder")

    embed = embed or verifier.embed_file

    def embed_one(relative: str) -> Embedding | None:
        try:
            return embed(root / relative)
        except (Undecidable, InvalidImage):
            return None

    embeddings: dict[str, Embedding | None] = {}
    pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="embed")
    futures = [(relative, pool.submit(embed_one, relative)) for relative in sorted(set(paths))]
    try:
        for relative, future in progress(futures):
            try:
                embeddings[relative] = future.result()
            except OSError as e:
                # A missing image is a wrong --root or a stale CSV, not a face that was not found.
                raise InvalidRequest(
                    f"cannot read {root / relative}: {e.strerror} (paths are relative to --root)"
                ) from None
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        # Finished but not yet collected embeddings are wiped with the collected ones.
        for relative, future in futures:
            if relative not in embeddings and future.done() and not future.cancelled() and future.exception() is None:
                embeddings[relative] = future.result()
        wipe(embeddings)
        raise
    pool.shutdown()
    return embeddings


def score_pairs(pairs: list[Pair], embeddings: dict[str, Embedding | None]) -> list[ScoredPair]:
    scored = []
    for pair in pairs:
        a, b = embeddings.get(pair.a), embeddings.get(pair.b)
        scored.append(ScoredPair(pair, None if a is None or b is None else cosine_similarity(a, b)))
    return scored


def chip_embedding(verifier: Verifier, path: Path, grey: bool) -> Embedding:
    """The embedding Verify compares when ``path``'s subject is on an ID card's chip: a
    102x126 JPEG-q30 chip copy (``kiosk.offline.chip``), found again and embedded softened."""
    with Scratch() as scratch:
        image = scratch.keep(decode_image(Path(path).read_bytes(), verifier.rules.image_limits))
        face = find_subject_face(verifier.models.detector, image, ImageRole.ID_PHOTO, verifier.rules.subject, scratch)
        chip = chip_photo(image, face.box, grey=grey)
    return embed_photo(verifier.models, chip, verifier.rules, soften=True)


def chip_scored_pairs(
    verifier: Verifier, root: Path, pairs: list[Pair], progress: Callable[[list], Iterable] = iter, workers: int = 1
) -> list[ScoredPair]:
    """Every pair scored as a comparison with a chip-sized ID photo, twice: side a as a
    colour and as a grey chip copy, side b as the live face, both embedded softened as
    Verify embeds them (``kiosk calibrate --chip-id-photos``)."""
    live_paths = [p.b for p in pairs]
    live = embed_images(verifier, root, live_paths, progress, workers,
                        embed=lambda path: embed_photo(verifier.models, path.read_bytes(), verifier.rules, soften=True))
    scored: list[ScoredPair] = []
    try:
        for grey in (False, True):
            chips = embed_images(verifier, root, [p.a for p in pairs], progress, workers,
                                 embed=lambda path, grey=grey: chip_embedding(verifier, path, grey))
            try:
                for pair in pairs:
                    a, b = chips.get(pair.a), live.get(pair.b)
                    scored.append(ScoredPair(pair, None if a is None or b is None else cosine_similarity(a, b)))
            finally:
                wipe(chips)
    finally:
        wipe(live)
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
