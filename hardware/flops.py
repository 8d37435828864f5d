"""Arithmetic work of an ONNX model at given input shapes, and this machine's float32 peak.

``model_flops`` counts the multiply-accumulates of every Conv, Gemm and MatMul (the ops
that hold all but a sliver of these networks' arithmetic) at the tensor shapes of one run
on the given input shape, and reports FLOPs = 2 x MACs.
Elementwise ops, pooling and softmax are left out, as in the usual model tables.

``measure_peak_gflops`` is the yardstick: the best GFLOP/s of a large float32 matrix
product in numpy (OpenBLAS) with a given number of threads, measured in a child process
because OpenBLAS fixes its thread count when it loads.

    python -m hardware.flops models/mtcnn_pnet.onnx --shape 1,480,640,3 [--peak --threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx

# Big enough that OpenBLAS runs at its best, small enough for a few seconds on a Pi 4.
PEAK_MATRIX_SIDE = 1024
PEAK_REPEATS = 15


@dataclass(frozen=True)
class ModelWork:
    macs: int
    by_op: dict[str, int]  # MACs per op type

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def gflop(self) -> float:
        return self.flops / 1e9


def _tensor_shapes(model: onnx.ModelProto, names: set[str], input_shape: tuple[int, ...]) -> dict[str, list[int]]:
    """Shapes of the tensors ``names`` when the model runs on zeros of ``input_shape``.

    Measured by running the graph once (optimisations off, the tensors made graph
    outputs) rather than by ONNX shape inference, which gives up on shapes computed at
    run time (Shape -> Gather -> Reshape in the PyTorch exports).
    """
    import numpy as np
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    graph = probe.graph
    initialisers = {i.name: list(i.dims) for i in graph.initializer}
    (inp,) = [i for i in graph.input if i.name not in initialisers]
    outputs = {o.name for o in graph.output}
    wanted = sorted(names - set(initialisers))
    graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in wanted if name not in outputs
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    order = [o.name for o in session.get_outputs()]
    values = session.run(order, {inp.name: np.zeros(input_shape, dtype=np.float32)})
    shapes = {name: list(value.shape) for name, value in zip(order, values)}
    shapes.update({name: dims for name, dims in initialisers.items() if name in names})
    return shapes


def model_flops(model: onnx.ModelProto | str | Path, input_shape: tuple[int, ...]) -> ModelWork:
    """MACs of ``model`` (single float input) fed a tensor of ``input_shape``."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    counted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    needed = {name for n in counted for name in (n.input[0], n.input[1], n.output[0])}
    shapes = _tensor_shapes(model, needed, input_shape)
    by_op: dict[str, int] = {}
    for node in counted:
        out = shapes[node.output[0]]
        if node.op_type == "Conv":
            # Each output element takes (C_in / group) x kernel MACs: exactly the weight's per-filter size.
            macs = math.prod(out) * math.prod(shapes[node.input[1]][1:])
        elif node.op_type == "Gemm":
            a = shapes[node.input[0]]
            trans_a = next((attr.i for attr in node.attribute if attr.name == "transA"), 0)
            macs = math.prod(out) * (a[0] if trans_a else a[1])
        else:
            macs = math.prod(out) * shapes[node.input[0]][-1]
        by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    return ModelWork(sum(by_op.values()), by_op)


_PEAK_CHILD = """
import json, sys, time
import numpy as np
n, repeats = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    a @ b
    best = min(best, time.perf_counter() - start)
print(json.dumps({"gflops": 2 * n**3 / best / 1e9}))
"""


def measure_peak_gflops(threads: int, side: int = PEAK_MATRIX_SIDE, repeats: int = PEAK_REPEATS) -> float:
    """Best float32 GFLOP/s of an ``side`` x ``side`` numpy matmul on ``threads`` threads."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    out = subprocess.run(
        [sys.executable, "-c", _PEAK_CHILD, str(side), str(repeats)],
        env=env, capture_output=True, text=True, check=True, timeout=600,
    )
    return float(json.loads(out.stdout)["gflops"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--shape", help="input shape, comma-separated, e.g. 1,480,640,3")
    parser.add_argument("--peak", action="store_true", help="also measure the float32 matmul peak")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.model is not None:
        work = model_flops(args.model, tuple(int(d) for d in args.shape.split(",")))
        print(f"{args.model.name} at {args.shape}: {work.gflop:.4f} GFLOP ({work.macs / 1e6:.1f} M MACs) {work.by_op}")
    if args.peak:
        print(f"float32 matmul peak, {args.threads} thread(s): {measure_peak_gflops(args.threads):.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
