"""Measure how close real captures of one person get vs copies of a chip photo made from one of them.

The evidence behind kiosk/pipeline/injection.py's limits. Run from the checkout root:

    python -m tests.bench.injection_measure

For each person of the webcam subsets (NUAA, webcam_pigface) and six phone_selfie_live
people, a card chip-like photo (card framing, 102x126, JPEG q30, every other one grey) is
made from one capture; the person's other captures are the genuine side, ten edited copies
of the chip the attack side. Prints min/median/max of the aligned-crop correlation and
the embedding cosine per condition, then how many of each side a (cosine, correlation)
rule flags. Reads the shared photos in place; writes nothing.
"""
import random, glob
from pathlib import Path
import cv2, numpy as np
from kiosk.errors import Undecidable
from kiosk.settings import Settings
from kiosk.pipeline.verifier import Verifier
from kiosk.pipeline.align import align_face
from kiosk.pipeline.scratch import Scratch
from kiosk.pipeline.types import ImageRole
from kiosk.pipeline.compare import cosine_similarity

from tests.conftest import faces_root

FACES = faces_root()
v = Verifier.load(Settings())
rng = random.Random(7)

def analyse(img, role):
    with Scratch() as s:
        try:
            face = v.subject_face(s, img, role)
        except Undecidable:
            return None
        al = align_face(img, face.landmarks).copy()
        emb = np.array(v.embedder.embed(al)).copy()
        box = face.box
    return al, emb, box

def chip(img, box, grey):
    # card framing: face box widened to a 102:126 portrait with head ~ 70% of height
    cx, cy = box.x + box.width / 2, box.y + box.height / 2
    h = box.height / 0.62; w = h * 102 / 126
    x0, y0 = int(cx - w / 2), int(cy - h * 0.45)
    pad = 400
    big = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    crop = big[y0 + pad:int(y0 + h) + pad, x0 + pad:int(x0 + w) + pad]
    c = cv2.resize(crop, (102, 126), interpolation=cv2.INTER_AREA)
    if grey:
        c = cv2.cvtColor(cv2.cvtColor(c, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    ok, enc = cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, 30])
    return cv2.imdecode(enc, cv2.IMREAD_COLOR)

def jpeg(img, q):
    return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_COLOR)

def copies(c):
    h, w = c.shape[:2]
    out = {}
    out["up4_cubic"] = jpeg(cv2.resize(c, (w * 4, h * 4), interpolation=cv2.INTER_CUBIC), 95)
    out["up6_lanczos"] = jpeg(cv2.resize(c, (w * 6, h * 6), interpolation=cv2.INTER_LANCZOS4), 90)
    out["up1.5_q70"] = jpeg(cv2.resize(c, (int(w * 1.5), int(h * 1.5))), 70)
    up = cv2.resize(c, (w * 4, h * 4), interpolation=cv2.INTER_CUBIC)
    out["crop_up"] = jpeg(up[40:-30, 30:-30], 92)
    M = cv2.getRotationMatrix2D((w * 2, h * 2), 4, 1.0)
    out["rot4"] = jpeg(cv2.warpAffine(up, M, (w * 4, h * 4), borderMode=cv2.BORDER_REPLICATE), 92)
    shifted = np.clip(up.astype(np.int16) + np.array([25, -10, 15]), 0, 255).astype(np.uint8)
    out["colour"] = jpeg(shifted, 92)
    gamma = (255 * (up / 255.0) ** 0.7).astype(np.uint8)
    out["gamma"] = jpeg(gamma, 92)
    noisy = np.clip(up.astype(np.float32) + np.random.default_rng(1).normal(0, 6, up.shape), 0, 255).astype(np.uint8)
    out["noise"] = jpeg(noisy, 85)
    out["blur"] = jpeg(cv2.GaussianBlur(up, (0, 0), 2.0), 92)
    # placed into a webcam-sized frame (pasted on a background)
    canvas = np.full((480, 640, 3), 90, np.uint8)
    canvas[40:40 + h * 3, 170:170 + w * 3] = cv2.resize(c, (w * 3, h * 3), interpolation=cv2.INTER_CUBIC)
    out["pasted_in_frame"] = jpeg(canvas, 90)
    return out

def grey(al):
    return cv2.cvtColor(al, cv2.COLOR_BGR2GRAY).astype(np.float32)

def ncc(a, b, sigma):
    ga, gb = grey(a), grey(b)
    if sigma:
        ga, gb = cv2.GaussianBlur(ga, (0, 0), sigma), cv2.GaussianBlur(gb, (0, 0), sigma)
    # central region: the face, not the background corners
    ga, gb = ga[16:104, 16:96].ravel(), gb[16:104, 16:96].ravel()
    ga = ga - ga.mean(); gb = gb - gb.mean()
    return float(ga @ gb / (np.linalg.norm(ga) * np.linalg.norm(gb) + 1e-9))

def grad_ncc(a, b, sigma=1.5):
    # correlation of gradient magnitude: insensitive to brightness and colour shifts
    def g(x):
        x = cv2.GaussianBlur(grey(x), (0, 0), sigma)
        gx = cv2.Sobel(x, cv2.CV_32F, 1, 0); gy = cv2.Sobel(x, cv2.CV_32F, 0, 1)
        return np.hypot(gx, gy)[16:104, 16:96].ravel()
    ga, gb = g(a), g(b); ga -= ga.mean(); gb -= gb.mean()
    return float(ga @ gb / (np.linalg.norm(ga) * np.linalg.norm(gb) + 1e-9))

persons = sorted(glob.glob(str(FACES / "nuaa__*"))) + sorted(glob.glob(str(FACES / "webcam_pigface__*")))
persons += sorted(glob.glob(str(FACES / "phone_selfie_live__*")))[:6]
rows = []
for person in persons:
    files = sorted(Path(person).glob("*.jpg"))
    rng.shuffle(files)
    files = files[:8]
    analysed = []
    for f in files:
        img = cv2.imread(str(f))
        r = analyse(img, ImageRole.LIVE_FRAME)
        if r: analysed.append((f, img, r))
    for i, (f, img, (al, emb, box)) in enumerate(analysed[:4]):
        c = chip(img, box, grey=(i % 2 == 1))
        rid = analyse(c, ImageRole.ID_PHOTO)
        if rid is None: continue
        ida, ide, _ = rid
        # genuine: every other capture of the person (original frames) vs this chip
        for g, gimg, (gal, gemb, _) in analysed:
            if g == f: continue
            rows.append(("genuine", Path(person).name, "other_capture", ncc(ida, gal, 2), ncc(ida, gal, 0), grad_ncc(ida, gal), cosine_similarity(ide, gemb)))
        # the capture the chip was made from (a real capture of the same moment)
        rows.append(("genuine", Path(person).name, "chip_source_frame", ncc(ida, al, 2), ncc(ida, al, 0), grad_ncc(ida, al), cosine_similarity(ide, emb)))
        for name, cp in copies(c).items():
            rc = analyse(cp, ImageRole.LIVE_FRAME)
            if rc is None:
                rows.append(("copy", Path(person).name, name + ":noface", None, None, None, None)); continue
            cal, cemb, _ = rc
            rows.append(("copy", Path(person).name, name, ncc(ida, cal, 2), ncc(ida, cal, 0), grad_ncc(ida, cal), cosine_similarity(ide, cemb)))
for kind in ("genuine", "copy"):
    for cond in sorted({r[2] for r in rows if r[0] == kind}):
        rs = [r for r in rows if r[0] == kind and r[2] == cond and r[3] is not None]
        if not rs: 
            print(kind, cond, "n=0 (no face)", len([r for r in rows if r[2]==cond])); continue
        a = np.array([r[3:] for r in rs])
        print(f"{kind:8s} {cond:20s} n={len(rs):3d} ncc_s2 min/med/max {a[:,0].min():.3f}/{np.median(a[:,0]):.3f}/{a[:,0].max():.3f}  ncc_raw {a[:,1].min():.3f}/{a[:,1].max():.3f} grad {a[:,2].min():.3f}/{a[:,2].max():.3f} cos {a[:,3].min():.3f}/{a[:,3].max():.3f}")

# --------------------------------------------------------------------------- rules
g = [r for r in rows if r[0]=="genuine" and r[2]=="other_capture"]
s = [r for r in rows if r[0]=="genuine" and r[2]=="chip_source_frame"]
c = [r for r in rows if r[0]=="copy" and r[3] is not None]
print("genuine other by cos:", [(round(r[6],3), round(r[3],3)) for r in sorted(g, key=lambda r:-r[6])[:8]])
print("genuine other by ncc:", [(round(r[6],3), round(r[3],3)) for r in sorted(g, key=lambda r:-r[3])[:8]])
print("chip source by cos:", [(round(r[6],3), round(r[3],3), r[1]) for r in sorted(s, key=lambda r:-r[6])[:8]])
print("copies lowest cos:", [(round(r[6],3), round(r[3],3), r[2], r[1]) for r in sorted(c, key=lambda r:r[6])[:10]])
print("copies lowest ncc:", [(round(r[6],3), round(r[3],3), r[2], r[1]) for r in sorted(c, key=lambda r:r[3])[:10]])
for a in (0.80, 0.82, 0.84, 0.86, 0.88, 0.89, 0.90):
  for b in (0.80, 0.85, 0.9, 0.93):
    fg = sum(1 for r in g if r[6]>=a and r[3]>=b); fs = sum(1 for r in s if r[6]>=a and r[3]>=b); cc = sum(1 for r in c if r[6]>=a and r[3]>=b)
    print(f"cos>={a} ncc>={b}: copies caught {cc}/{len(c)}  genuine-other flagged {fg}/{len(g)}  chip-source-frame flagged {fs}/{len(s)}")
