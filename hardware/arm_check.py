"""Prove the aarch64 onnxruntime wheel loads our models and agrees with x86, under qemu-user.

    python hardware/arm_check.py --setup         # once: arm64 Python sysroot + aarch64 wheels
    python hardware/arm_check.py [--cpu cortex-a72 --cpu cortex-a76] [--json out.json]

What it does:

1. On the host (x86), the real pipeline finds and aligns a face in a fixed photo of the
   shared set and prepares the exact tensors each model sees: the aligned face for the
   embedder, one pyramid level for p-net, the candidate crops for r-net and o-net.
2. An aarch64 CPython (Debian's, unpacked into a sysroot, no system change beyond
   apt's arm64 package lists) runs under ``qemu-aarch64 -cpu MODEL`` with the
   manylinux aarch64 wheels of onnxruntime (the host's version) and numpy, loads the
   committed ``.onnx`` files and runs them on those tensors.
3. The host compares: embedding cosine, and for MTCNN the largest difference of the
   probabilities (absolute) and of the regressions/landmarks (relative to their largest
   magnitude), with the limits models/build.py holds the conversions to.

``-cpu cortex-a72`` gives the guest exactly the Pi 4's instruction set (ARMv8.0: no
dot-product, no fp16 arithmetic): an instruction the A72 lacks is SIGILL under qemu as
on the board, which is how onnxruntime 1.21.0 failed on Pi 4s ("Illegal instruction" at
import). ``cortex-a76`` is the Pi 5's (ARMv8.2 with dot-product). Timings under
emulation say nothing about the board and are reported only as how long the check took.

qemu-user (7.2, Debian 12) passes the host's x86 ``/proc/cpuinfo`` through, and
onnxruntime's cpuinfo library crashes on it (SIGSEGV at import). So the guest runs in a
private mount namespace (``unshare --mount``, root) where ``/proc/cpuinfo`` is the board's:
the CPU part, features and core count a Pi 4 or Pi 5 reports.

The cache (sysroot and wheels) lives in ``$KIOSK_ARM_CACHE`` (default
``~/.cache/kiosk/arm``), outside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
PYTHON_VERSION = "3.11"
# Debian packages of an arm64 CPython and the C++ runtime onnxruntime links against.
SYSROOT_ROOTS = (f"python{PYTHON_VERSION}-minimal", f"libpython{PYTHON_VERSION}-stdlib", "libstdc++6", "libgcc-s1")
WHEEL_PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_28_aarch64")
# The same limits as models/build.py's numerical checks.
PROB_ABS_LIMIT = 1e-4
VALUE_REL_LIMIT = 1e-3
MIN_EMBEDDING_COSINE = 0.9999
CPU_MODELS = ("cortex-a72", "cortex-a76")
# /proc/cpuinfo of each board, per core: (CPU variant, CPU part, revision, Features).
_CPUINFO = {
    "cortex-a72": ("0x0", "0xd08", "3", "fp asimd evtstrm crc32 cpuid"),
    "cortex-a76": ("0x4", "0xd0b", "1", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
                   "asimdrdm lrcpc dcpop asimddp"),
}

_GUEST = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort
work = sys.argv[1]
spec = json.load(open(f"{work}/spec.json"))
report = {"onnxruntime": ort.__version__, "numpy": np.__version__, "providers": ort.get_available_providers(), "runs": {}}
for run in spec["runs"]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    start = time.perf_counter()
    session = ort.InferenceSession(run["model"], options, providers=["CPUExecutionProvider"])
    tensor = np.load(f"{work}/{run['name']}.in.npy")
    outputs = session.run(None, {session.get_inputs()[0].name: tensor})
    for k, out in enumerate(outputs):
        np.save(f"{work}/{run['name']}.out{k}.npy", out)
    report["runs"][run["name"]] = {"seconds": time.perf_counter() - start, "outputs": len(outputs)}
json.dump(report, open(f"{work}/guest.json", "w"))
"""


class CheckUnavailable(RuntimeError):
    """Something the check needs is not installed; the message says how to get it."""


def cache_dir() -> Path:
    return Path(os.environ.get("KIOSK_ARM_CACHE", Path.home() / ".cache" / "kiosk" / "arm"))


def find_qemu() -> str:
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        path = shutil.which(name)
        if path:
            return path
    raise CheckUnavailable("qemu-aarch64 not found: apt-get install qemu-user-static (or qemu-user)")


def host_onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def sysroot_python(cache: Path) -> Path:
    python = cache / "sysroot" / "usr" / "bin" / f"python{PYTHON_VERSION}"
    if not python.is_file():
        raise CheckUnavailable(f"no arm64 Python sysroot in {cache}: run python hardware/arm_check.py --setup")
    return python


def site_dir(cache: Path, ort_version: str) -> Path:
    site = cache / f"site-onnxruntime-{ort_version}"
    if not (site / "onnxruntime").is_dir():
        raise CheckUnavailable(
            f"no aarch64 onnxruntime {ort_version} wheel unpacked in {cache}: run python hardware/arm_check.py --setup"
        )
    return site


def setup(cache: Path, ort_version: str) -> None:
    """Unpack Debian's arm64 CPython into a sysroot and the aarch64 wheels into a site dir."""
    cache.mkdir(parents=True, exist_ok=True)
    sysroot = cache / "sysroot"
    if not (sysroot / "usr" / "bin" / f"python{PYTHON_VERSION}").is_file():
        if "arm64" not in subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True).stdout:
            subprocess.run(["dpkg", "--add-architecture", "arm64"], check=True)
            subprocess.run(["apt-get", "update", "-qq"], check=True)
        depends = subprocess.run(
            ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
             "--no-breaks", "--no-replaces", "--no-enhances", *(f"{p}:arm64" for p in SYSROOT_ROOTS)],
            capture_output=True, text=True, check=True,
        ).stdout
        packages = sorted({line.strip() for line in depends.splitlines() if line and not line[0].isspace()
                           and line.strip().endswith(":arm64") and not line.startswith("<")})
        debs = cache / "debs"
        debs.mkdir(exist_ok=True)
        # Virtual packages have no .deb; apt-get download names them and stops, so ask one by one.
        for package in packages:
            subprocess.run(["apt-get", "download", "-qq", package], cwd=debs, capture_output=True)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(sysroot)], check=True)
    wheels = cache / "wheels"
    site = cache / f"site-onnxruntime-{ort_version}"
    if not (site / "onnxruntime").is_dir():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
             *(arg for p in WHEEL_PLATFORMS for arg in ("--platform", p)),
             "-d", str(wheels), f"onnxruntime=={ort_version}", "numpy"],
            check=True,
        )
        site.mkdir(parents=True, exist_ok=True)
        for wheel in sorted(wheels.glob("*.whl")):
            if "onnxruntime-" in wheel.name and f"-{ort_version}-" not in wheel.name:
                continue
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)


def board_cpuinfo(cpu: str, cores: int) -> str:
    variant, part, revision, features = _CPUINFO[cpu]
    blocks = [
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n"
        for i in range(cores)
    ]
    return "\n".join(blocks) + "\n"


def guest_command(qemu: str, cpu: str, python: Path, args: list[str], work: Path) -> list[str]:
    """The guest Python under qemu, in a mount namespace where /proc/cpuinfo is the board's."""
    if shutil.which("unshare") is None:
        raise CheckUnavailable("unshare (util-linux) not found")
    fake = work / f"cpuinfo-{cpu}"
    # cpuinfo counts the cores of /sys/devices/system/cpu/possible, which stays the host's.
    fake.write_text(board_cpuinfo(cpu, os.cpu_count() or 1))
    root = python.parent.parent.parent
    return [
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        f'mount --bind "{fake}" /proc/cpuinfo && exec "$@"', "sh",
        qemu, "-cpu", cpu, "-L", str(root), str(python), *args,
    ]


# --- host side -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    cpu: str
    model: str
    output: int
    kind: str  # "cosine" | "abs" | "rel"
    value: float
    limit: float

    @property
    def ok(self) -> bool:
        return self.value >= self.limit if self.kind == "cosine" else self.value <= self.limit


def host_tensors() -> dict[str, tuple[str, "object"]]:
    """name -> (model file, input tensor) for the models the check runs, from a real photo."""
    sys.path.insert(0, str(REPO))
    import kiosk.pipeline  # noqa: F401  (OpenCV decoder ceilings before cv2 loads)
    import cv2
    import numpy as np

    from kiosk.pipeline.align import align_face
    from kiosk.pipeline.decode import ImageLimits, decode_image
    from kiosk.pipeline.detect import MtcnnDetector, crop_batch
    from kiosk.pipeline.tensors import to_input_tensor
    from kiosk.runtime.manifest import load_manifest
    from kiosk.runtime.sessions import SessionFactory
    from kiosk.runtime.profile import OrtSettings

    faces = Path(os.environ.get("KIOSK_FACES_DIR", REPO.parent / "shared" / "data" / "faces"))
    photo = sorted((faces / "nuaa__s01").iterdir())[-1]
    manifest = load_manifest(MODELS_DIR / "manifest.toml")
    factory = SessionFactory(MODELS_DIR, manifest, OrtSettings())
    detector = MtcnnDetector(*(factory.create(r) for r in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")))
    image = decode_image(photo.read_bytes(), ImageLimits(3 << 20, 12_000_000, 8192))
    (face, *_) = detector.detect(image, 48)
    thresholds = detector.thresholds
    proposals = detector._proposals(image, 48, thresholds)
    refined = detector._refine(image, proposals, thresholds)
    entry = manifest.entry
    level = cv2.resize(image, (160, 120), interpolation=cv2.INTER_AREA)
    return {
        "embedder": (entry("embedder").file, to_input_tensor(align_face(image, face.landmarks)[np.newaxis], entry("embedder").input)),
        "mtcnn_pnet": (entry("mtcnn_pnet").file, to_input_tensor(level[np.newaxis], entry("mtcnn_pnet").input)),
        "mtcnn_rnet": (entry("mtcnn_rnet").file, to_input_tensor(crop_batch(image, proposals, 24), entry("mtcnn_rnet").input)),
        "mtcnn_onet": (entry("mtcnn_onet").file, to_input_tensor(crop_batch(image, refined, 48), entry("mtcnn_onet").input)),
    }


def run_check(cpus: tuple[str, ...], cache: Path) -> dict:
    import numpy as np
    import onnxruntime as ort

    qemu = find_qemu()
    ort_version = host_onnxruntime_version()
    python = sysroot_python(cache)
    site = site_dir(cache, ort_version)
    tensors = host_tensors()
    report = {"host_onnxruntime": ort_version, "qemu": qemu, "cpus": {}, "agreement": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "guest.py").write_text(_GUEST)
        runs = []
        host_outputs = {}
        for name, (file, tensor) in tensors.items():
            np.save(work / f"{name}.in.npy", tensor)
            runs.append({"name": name, "model": str(MODELS_DIR / file)})
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            session = ort.InferenceSession(str(MODELS_DIR / file), options, providers=["CPUExecutionProvider"])
            host_outputs[name] = session.run(None, {session.get_inputs()[0].name: tensor})
        (work / "spec.json").write_text(json.dumps({"runs": runs}))
        env = {"PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1", "PATH": os.environ.get("PATH", "")}
        for cpu in cpus:
            start = time.perf_counter()
            done = subprocess.run(
                guest_command(qemu, cpu, python, [str(work / "guest.py"), str(work)], work),
                env=env, capture_output=True, text=True, timeout=3600,
            )
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                report["cpus"][cpu] = {"ok": False, "returncode": done.returncode, "stderr": done.stderr[-2000:],
                                       "seconds": round(seconds, 1)}
                continue
            guest = json.loads((work / "guest.json").read_text())
            report["cpus"][cpu] = {"ok": True, "seconds": round(seconds, 1), **guest}
            for name, outputs in host_outputs.items():
                for k, ref in enumerate(outputs):
                    got = np.load(work / f"{name}.out{k}.npy")
                    if name == "embedder":
                        a, b = ref[0] / np.linalg.norm(ref[0]), got[0] / np.linalg.norm(got[0])
                        report["agreement"].append(asdict(Agreement(cpu, name, k, "cosine", float(a @ b), MIN_EMBEDDING_COSINE)))
                    elif k == 0:  # MTCNN probabilities
                        diff = float(np.abs(got - ref).max())
                        report["agreement"].append(asdict(Agreement(cpu, name, k, "abs", diff, PROB_ABS_LIMIT)))
                    else:
                        diff = float(np.abs(got - ref).max() / (np.abs(ref).max() or 1.0))
                        report["agreement"].append(asdict(Agreement(cpu, name, k, "rel", diff, VALUE_REL_LIMIT)))
    report["ok"] = all(c["ok"] for c in report["cpus"].values()) and all(
        Agreement(**a).ok for a in report["agreement"]
    )
    return report


def format_report(report: dict) -> str:
    lines = [f"host onnxruntime {report['host_onnxruntime']}; aarch64 guest under {report['qemu']}"]
    for cpu, result in report["cpus"].items():
        if result["ok"]:
            lines.append(f"  -cpu {cpu}: onnxruntime {result['onnxruntime']}, numpy {result['numpy']}: "
                         f"all models loaded and ran ({result['seconds']} s under emulation)")
        else:
            lines.append(f"  -cpu {cpu}: FAILED (exit {result['returncode']}): {result['stderr'].strip()[-300:]}")
    lines.append("| cpu | model | output | measure | value | limit | ok |")
    lines.append("|---|---|---:|---|---:|---:|---|")
    for a in report["agreement"]:
        ok = Agreement(**a).ok
        lines.append(f"| {a['cpu']} | {a['model']} | {a['output']} | {a['kind']} | {a['value']:.7g} | {a['limit']:g} | {'yes' if ok else 'NO'} |")
    lines.append("OK" if report["ok"] else "FAILED")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="build the arm64 sysroot and fetch the wheels, then check")
    parser.add_argument("--cpu", action="append", choices=CPU_MODELS, help="qemu CPU model (default: both)")
    parser.add_argument("--onnxruntime", help="check this onnxruntime version's wheel instead of the host's")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    cache = cache_dir()
    version = args.onnxruntime or host_onnxruntime_version()
    try:
        if args.setup:
            setup(cache, version)
        if args.onnxruntime and args.onnxruntime != host_onnxruntime_version():
            return _import_only(tuple(args.cpu or CPU_MODELS), cache, version)
        report = run_check(tuple(args.cpu or CPU_MODELS), cache)
    except CheckUnavailable as e:
        print(f"cannot run: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


def _import_only(cpus: tuple[str, ...], cache: Path, version: str) -> int:
    """Another onnxruntime release: does its wheel even import on each CPU model? (e.g. 1.21.0)"""
    qemu, python, site = find_qemu(), sysroot_python(cache), site_dir(cache, version)
    env = {"PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1", "PATH": os.environ.get("PATH", "")}
    failed = 0
    for cpu in cpus:
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                guest_command(qemu, cpu, python, ["-c", "import onnxruntime as o; print(o.__version__)"], Path(tmp)),
                env=env, capture_output=True, text=True, timeout=1200,
            )
        status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode}, signal {-done.returncode if done.returncode < 0 else '-'})"
        print(f"onnxruntime {version} import, -cpu {cpu}: {status} {done.stdout.strip()} {done.stderr.strip()[-200:]}")
        failed += done.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
