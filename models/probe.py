"""Measure what the bundled models' outputs mean and which input conventions they expect.

    python models/probe.py [--faces DIR]

The source packages document little, and their own glue code is not always right (the
faceplugin JS feeds RGB to networks that work far better on BGR). This script re-derives,
on the real photos of shared/data/faces, every empirical claim that models/README.md and
the manifest notes make: MTCNN probability index, box-regression and landmark order and
orientation, the embedders' colour order, mean and alignment, the liveness class index and
colour order, and the eye-state class index. It uses its own minimal MTCNN cascade (the
source app's thresholds) so that it depends on nothing in kiosk/.

Analysis only: build-time tooling, never imported by the service; it writes nothing unless
asked to save eye patches (which are crops of real people's photos: keep them out of git).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import cv2
import numpy as np
import kiosk  # noqa: F401, I001  (turns ONNX Runtime telemetry off before it loads)
import onnxruntime as ort

MODELS_DIR = Path(__file__).resolve().parent
DEFAULT_FACES_DIR = MODELS_DIR.parent.parent / "shared" / "data" / "faces"
PAIR_SUBSETS = ["lfw", "lfw_extra", "kpop", "cnceleb", "jpceleb_uncleaned", "nuaa_live"]
# ArcFace's 112x112 reference positions of the five points, in o-net's order.
ARCFACE_POINTS = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


def session(file: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS_DIR / file), providers=["CPUExecutionProvider"])


def read_bgr(path: Path) -> np.ndarray | None:
    # Some files carry a .jpg name over PNG/BMP data: decode by content.
    return cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def auc(positive, negative) -> float:
    pos, neg = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float((pos > neg).mean() + 0.5 * (pos == neg).mean())


def separation(genuine, impostor) -> str:
    g, i = np.asarray(genuine), np.asarray(impostor)
    d_prime = (g.mean() - i.mean()) / np.sqrt((g.var() + i.var()) / 2)
    threshold = np.sort(i)[::-1][int(len(i) * 0.01)]
    return (
        f"{len(g)}+{len(i)} pairs: AUC {auc(g, i):.4f}, d' {d_prime:.2f}, "
        f"TAR at FAR 1 % {(g > threshold).mean():.3f}"
    )


# --- a minimal MTCNN ------------------------------------------------------------------


class Mtcnn:
    def __init__(self):
        self.pnet = session("mtcnn_pnet.onnx")
        self.rnet = session("mtcnn_rnet.onnx")
        self.onet = session("mtcnn_onet.onnx")

    @staticmethod
    def pixels(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
        """RGB, (x - 127.5) / 128, width-first: the nets' input convention."""
        rgb = cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        return ((rgb.astype(np.float32) - 127.5) / 128.0).transpose(1, 0, 2)

    def run_rnet(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        batch = np.stack([self.pixels(c, 24, 24) for c in crops])
        return self.rnet.run(None, {"rnet/input": batch})

    def run_onet(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        batch = np.stack([self.pixels(c, 48, 48) for c in crops])
        return self.onet.run(None, {"onet/input": batch})

    def run_pnet(self, image: np.ndarray, width: int, height: int) -> list[np.ndarray]:
        return self.pnet.run(None, {"pnet/input": self.pixels(image, width, height)[None]})

    def largest_face(self, image: np.ndarray, min_face: int = 20):
        """(box x1 y1 x2 y2, 5x2 points) of the largest face, or None."""
        boxes = self._proposals(image, min_face)
        for stage in ("r", "o"):
            if len(boxes) == 0:
                return None
            boxes = _square(boxes)
            crops = [_crop(image, b) for b in boxes]
            if stage == "r":
                prob, reg = self.run_rnet(crops)
            else:
                prob, reg, marks = self.run_onet(crops)
            keep = prob[:, 1] > 0.7
            boxes, reg = boxes[keep], reg[keep]
            boxes[:, 4] = prob[keep, 1]
            if stage == "r":
                boxes = _regress(boxes, reg)[_nms(boxes, 0.7)]
        if len(boxes) == 0:
            return None
        marks = marks[keep]
        w = boxes[:, 2] - boxes[:, 0] + 1
        h = boxes[:, 3] - boxes[:, 1] + 1
        xs = boxes[:, :1] + marks[:, :5] * w[:, None]
        ys = boxes[:, 1:2] + marks[:, 5:] * h[:, None]
        points = np.stack([xs, ys], -1)
        boxes = _regress(boxes, reg)
        best = max(_nms(boxes, 0.7, by_min=True), key=lambda k: w[k] * h[k])
        return boxes[best, :4], points[best]

    def _proposals(self, image: np.ndarray, min_face: int) -> np.ndarray:
        height, width = image.shape[:2]
        scale = 12.0 / min_face
        found = []
        while min(height, width) * scale >= 12:
            prob, reg = self.run_pnet(image, int(np.ceil(width * scale)), int(np.ceil(height * scale)))
            # Width-first maps: index [i, j] is the window at x = 2i, y = 2j.
            xs, ys = np.nonzero(prob[0, :, :, 1] >= 0.6)
            boxes = np.column_stack(
                [
                    np.fix((2 * xs + 1) / scale), np.fix((2 * ys + 1) / scale),
                    np.fix((2 * xs + 12) / scale), np.fix((2 * ys + 12) / scale),
                    prob[0, xs, ys, 1],
                ]
            )
            keep = _nms(boxes, 0.5)
            found.append((boxes[keep], reg[0, xs, ys][keep]))
            scale *= 0.709
        if not found:
            return np.empty((0, 5))
        boxes, regs = (np.concatenate(parts) for parts in zip(*found))
        keep = _nms(boxes, 0.7)
        return _regress(boxes[keep], regs[keep])


def _nms(boxes: np.ndarray, overlap: float, by_min: bool = False) -> list[int]:
    x1, y1, x2, y2, score = boxes[:, :5].T
    area = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = np.argsort(score)[::-1], []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        inter = np.maximum(0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1) * np.maximum(
            0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1
        )
        union = np.minimum(area[i], area[rest]) if by_min else area[i] + area[rest] - inter
        order = rest[inter / union <= overlap]
    return keep


def _regress(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply (dx1, dy1, dx2, dy2), fractions of width/height in image orientation."""
    out = boxes.copy()
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out[:, :4] += reg * np.column_stack([w, h, w, h])
    return out


def _square(boxes: np.ndarray) -> np.ndarray:
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] += (w - side) / 2
    out[:, 1] += (h - side) / 2
    out[:, 2], out[:, 3] = out[:, 0] + side, out[:, 1] + side
    return out


def _crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The box's pixels, zero outside the image."""
    x1, y1, x2, y2 = np.fix(box[:4]).astype(int)
    patch = np.zeros((y2 - y1 + 1, x2 - x1 + 1, 3), dtype=np.uint8)
    sx1, sy1 = max(x1, 0), max(y1, 0)
    sx2, sy2 = min(x2 + 1, image.shape[1]), min(y2 + 1, image.shape[0])
    if sx2 > sx1 and sy2 > sy1:
        patch[sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[sy1:sy2, sx1:sx2]
    return patch


def aligned(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    matrix, _ = cv2.estimateAffinePartial2D(points.astype(np.float32), ARCFACE_POINTS, method=cv2.LMEDS)
    return cv2.warpAffine(image, matrix, (112, 112))


# --- the probes -----------------------------------------------------------------------


def probe_mtcnn(mtcnn: Mtcnn, faces: Path) -> None:
    """Shift centred LFW face crops by 20 px (of 110) along x only, then y only."""
    photos = [read_bgr(p) for p in sorted(faces.glob("lfw__*/*"))[::8][:60]]
    base = [im[70:180, 70:180] for im in photos]
    right = [im[70:180, 90:200] for im in photos]
    down = [im[90:200, 70:180] for im in photos]
    background = [im[:60, :60] for im in photos]
    print(f"MTCNN on {len(photos)} LFW photos (box moved 20 px = 0.18 of its side)")
    for name, run in [("r-net", mtcnn.run_rnet), ("o-net", mtcnn.run_onet)]:
        b, r, d, g = run(base), run(right), run(down), run(background)
        print(f"  {name} mean prob on faces {b[0].mean(0).round(3)}, on background {g[0].mean(0).round(3)}")
        print(f"  {name} regression change, box moved right: {(r[1] - b[1]).mean(0).round(3)}")
        print(f"  {name} regression change, box moved down:  {(d[1] - b[1]).mean(0).round(3)}")
        if name == "o-net":
            print(f"  o-net landmarks, mean on faces:     {b[2].mean(0).round(3)}")
            print(f"  o-net landmark change, moved right: {(r[2] - b[2]).mean(0).round(3)}")
            print(f"  o-net landmark change, moved down:  {(d[2] - b[2]).mean(0).round(3)}")
    # P-net on single 12x12 windows (one map cell), and where a face lands in its map.
    for label, crops in [("right", right), ("down", down)]:
        moved = np.concatenate([mtcnn.run_pnet(c, 12, 12)[1].reshape(1, 4) for c in crops])
        still = np.concatenate([mtcnn.run_pnet(c, 12, 12)[1].reshape(1, 4) for c in base])
        print(f"  p-net regression change, moved {label}: {(moved - still).mean(0).round(3)}")
    canvas = np.full((200, 400, 3), 128, dtype=np.uint8)
    canvas[20:68, 300:348] = cv2.resize(base[0], (48, 48))
    prob = mtcnn.run_pnet(canvas, 400, 200)[0]
    i, j = np.unravel_index(prob[0, :, :, 1].argmax(), prob.shape[1:3])
    print(
        f"  p-net map {prob.shape[1:3]} for a 400x200 image; face pasted at x 300-347, y 20-67; "
        f"best cell [{i}, {j}] -> window x {2 * i}, y {2 * j}"
    )


def detected_pairs(mtcnn: Mtcnn, faces: Path):
    """(genuine?, (aligned, box crop) of a, of b) for every pair whose faces are found."""
    cache: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}

    def face(rel: str):
        if rel not in cache:
            image = read_bgr(faces / rel)
            found = mtcnn.largest_face(image)
            cache[rel] = None
            if found is not None:
                box, points = found
                crop = cv2.resize(_crop(image, box), (112, 112), interpolation=cv2.INTER_AREA)
                cache[rel] = (aligned(image, points), crop)
        return cache[rel]

    for subset in PAIR_SUBSETS:
        with open(faces / "pairs_by_subset" / f"{subset}.csv", newline="") as f:
            for row in csv.DictReader(f):
                a, b = face(row["a"]), face(row["b"])
                if a is not None and b is not None:
                    yield row["same"] == "1", a, b


def probe_embedders(mtcnn: Mtcnn, faces: Path) -> None:
    fr_feature = session("fr_feature.onnx")
    mobilefacenet = session("mobilefacenet_192.onnx")

    def fr(face, bgr=True, mean=127.5):
        x = (face if bgr else face[:, :, ::-1]).astype(np.float32)
        e = fr_feature.run(None, {"input": ((x - mean) / 128.0).transpose(2, 0, 1)[None]})[0][0]
        return e / np.linalg.norm(e)

    def mfn(face, rgb=True):
        x = (face[:, :, ::-1] if rgb else face).astype(np.float32)
        e = mobilefacenet.run(None, {"input": ((x - 127.5) / 128.0)[None]})[0][0]
        return e / np.linalg.norm(e)

    variants = {
        "fr_feature aligned BGR, mean 127.5": lambda a, b: fr(a[0]) @ fr(b[0]),
        "fr_feature aligned RGB, mean 127.5": lambda a, b: fr(a[0], bgr=False) @ fr(b[0], bgr=False),
        "fr_feature aligned BGR, mean 127  ": lambda a, b: fr(a[0], mean=127.0) @ fr(b[0], mean=127.0),
        "mobilefacenet aligned RGB         ": lambda a, b: mfn(a[0]) @ mfn(b[0]),
        "mobilefacenet aligned BGR         ": lambda a, b: mfn(a[0], rgb=False) @ mfn(b[0], rgb=False),
        "mobilefacenet box crop RGB        ": lambda a, b: mfn(a[1]) @ mfn(b[1]),
    }
    scores = {name: ([], []) for name in variants}
    worst_cosine = 1.0
    for same, a, b in detected_pairs(mtcnn, faces):
        for name, score in variants.items():
            scores[name][0 if same else 1].append(float(score(a, b)))
        worst_cosine = min(worst_cosine, float(fr(a[0]) @ fr(a[0], mean=127.0)))
    print(f"Embedders on the pairs of {', '.join(PAIR_SUBSETS)} (faces found by MTCNN)")
    for name, (genuine, impostor) in scores.items():
        print(f"  {name}: {separation(genuine, impostor)}")
    print(f"  fr_feature, one face at mean 127 vs 127.5: lowest cosine {worst_cosine:.6f}")


def liveness_crop(image: np.ndarray, box: np.ndarray, scale: float = 2.7) -> np.ndarray:
    """The package's alignLivenessImage: the box scaled about its centre, kept inside the image."""
    height, width = image.shape[:2]
    bw, bh = box[2] - box[0], box[3] - box[1]
    scale = min((height - 1) / bh, (width - 1) / bw, scale)
    cx, cy = box[0] + bw / 2, box[1] + bh / 2
    left, top = cx - bw * scale / 2, cy - bh * scale / 2
    right, bottom = cx + bw * scale / 2, cy + bh * scale / 2
    shift_x = -left if left < 0 else min(0.0, width - 1 - right)
    shift_y = -top if top < 0 else min(0.0, height - 1 - bottom)
    left, right, top, bottom = left + shift_x, right + shift_x, top + shift_y, bottom + shift_y
    patch = image[max(int(top), 0) : int(bottom), max(int(left), 0) : int(right)]
    return cv2.resize(patch, (128, 128))


def probe_liveness(mtcnn: Mtcnn, faces: Path) -> None:
    liveness = session("fr_liveness.onnx")
    results = {"BGR": [], "RGB": []}
    with open(faces / "spoof" / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            image = read_bgr(faces / row["path"])
            found = mtcnn.largest_face(image, min_face=40)
            if found is None:
                continue
            crop = liveness_crop(image, found[0])
            for order, pixels in [("BGR", crop), ("RGB", crop[:, :, ::-1])]:
                x = pixels.astype(np.float32).transpose(2, 0, 1)[None]
                p = softmax(liveness.run(None, {"input": x})[0][0])
                results[order].append((row["label"], row["attack_type"], p))
    print("Liveness on shared/data/faces/spoof (MTCNN boxes, 2.7x crop)")
    for order, rows in results.items():
        live = np.array([p for label, _, p in rows if label == "real"])
        attack = np.array([p for label, _, p in rows if label == "attack"])
        aucs = ", ".join(f"index {k} {auc(live[:, k], attack[:, k]):.3f}" for k in range(3))
        print(f"  {order}: {len(live)} live, {len(attack)} attacks; AUC live > attack by {aucs}")
        print(f"  {order}: mean softmax on live {live.mean(0).round(3)}, "
              f"on attacks {attack.mean(0).round(3)}")
        for kind in sorted({t for label, t, _ in rows if label == "attack"}):
            ps = np.array([p for _, t, p in rows if t == kind])
            print(f"    {kind} ({len(ps)}): mean softmax {ps.mean(0).round(3)}")


def probe_eyes(mtcnn: Mtcnn, faces: Path, save_dir: Path | None) -> None:
    eye = session("fr_eye.onnx")
    paths = (
        sorted(faces.glob("lfw__*/*"))[::4][:150]
        + sorted(faces.glob("kpop__*/*"))[::3]
        + sorted(faces.glob("spoof/real/*"))
    )
    patches, probs = [], []
    for path in paths:
        image = read_bgr(path)
        found = mtcnn.largest_face(image)
        if found is None:
            continue
        points = found[1]
        side = int(round(0.75 * np.linalg.norm(points[1] - points[0])))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        for x, y in points[:2]:
            left, top = int(x - side / 2), int(y - side / 2)
            if side < 6 or left < 0 or top < 0 or left + side > gray.shape[1] or top + side > gray.shape[0]:
                continue
            patch = cv2.resize(gray[top : top + side, left : left + side], (24, 24))
            logits = eye.run(None, {"input": (patch.astype(np.float32) / 255.0)[None, None]})[0][0]
            patches.append(patch)
            probs.append(softmax(logits))
    probs = np.array(probs)
    print(f"Eye state on {len(probs)} eye patches (mostly open eyes)")
    print(f"  mean softmax {probs.mean(0).round(3)}; argmax 1 for {(probs.argmax(1) == 1).mean():.0%}")
    if save_dir is not None:
        order = np.argsort(probs[:, 1])
        save_dir.mkdir(parents=True, exist_ok=True)
        for name, picked in [("most_index0.png", order[:24]), ("most_index1.png", order[-24:])]:
            strip = np.hstack([patches[k] for k in picked])
            big = cv2.resize(strip, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(save_dir / name), big)
        print(f"  wrote the 24 patches most surely index 0 / index 1 to {save_dir} (look at them)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=Path, default=DEFAULT_FACES_DIR)
    parser.add_argument(
        "--save-eye-patches", type=Path, metavar="DIR",
        help="write eye-patch strips here for a visual check (outside the repository)",
    )
    args = parser.parse_args()
    mtcnn = Mtcnn()
    probe_mtcnn(mtcnn, args.faces)
    probe_embedders(mtcnn, args.faces)
    probe_liveness(mtcnn, args.faces)
    probe_eyes(mtcnn, args.faces, args.save_eye_patches)


if __name__ == "__main__":
    main()
