"""An independent pure-numpy interpreter of TF.js graph models: the reference for the ONNX check.

TensorFlow is not needed to check models/tfjs_to_onnx.py: this module executes the
same TF.js graph node by node with plain numpy, in float64, in the graph's own NHWC
layout, with TensorFlow's semantics written out from its documentation (SAME padding
puts the odd pixel after; depthwise output channel = c * multiplier + m; Prelu is
``x if x > 0 else alpha * x``; fused ops run in their listed order). It shares no code
with the converter: it reads the JSON and the weight bytes itself, so a mistake in
either one shows up as a difference instead of being repeated.

What it cannot catch is a misreading of TensorFlow shared by both; the build's
plausibility check (mesh points land on the eyes MTCNN finds) covers that.

Build-time only; never imported by the service.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class ReferenceError(ValueError):
    """The graph holds something this interpreter does not execute."""


def _weights(model: dict, read_file: Callable[[str], bytes]) -> dict[str, np.ndarray]:
    values = {}
    for group in model["weightsManifest"]:
        data = b"".join(read_file(path) for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            count = int(np.prod(spec["shape"], dtype=np.int64))
            quant = spec.get("quantization")
            if quant is None:
                dtype = {"float32": "<f4", "int32": "<i4"}[spec["dtype"]]
                array = np.frombuffer(data, dtype, count, offset).astype(np.float64)
            elif quant["dtype"] == "float16":
                array = np.frombuffer(data, "<f2", count, offset).astype(np.float64)
            elif quant["dtype"] in ("uint8", "uint16"):
                raw = np.frombuffer(data, {"uint8": "<u1", "uint16": "<u2"}[quant["dtype"]], count, offset)
                array = (raw.astype(np.float32) * np.float32(quant["scale"]) + np.float32(quant["min"])).astype(
                    np.float64
                )
            else:
                raise ReferenceError(f"quantisation {quant['dtype']}")
            offset += array.size * (np.dtype(quant["dtype"]).itemsize if quant else 4)
            values[spec["name"]] = array.reshape(spec["shape"])
    return values


def _s(attr: dict, key: str, default: str = "") -> str:
    value = attr.get(key, {}).get("s")
    return base64.b64decode(value).decode() if value is not None else default


def _ints(attr: dict, key: str) -> list[int]:
    return [int(i) for i in attr.get(key, {}).get("list", {}).get("i", [])]


def _pad_same(x: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int], fill: float) -> np.ndarray:
    """Pad H and W of an NHWC array as TensorFlow's SAME padding does."""
    widths = [(0, 0)]
    for size, k, s in zip(x.shape[1:3], kernel, strides):
        out = -(-size // s)
        total = max((out - 1) * s + k - size, 0)
        widths.append((total // 2, total - total // 2))
    widths.append((0, 0))
    return np.pad(x, widths, constant_values=fill)


def _windows(x: np.ndarray, attr: dict, kernel: tuple[int, int], fill: float = 0.0) -> np.ndarray:
    """(N, OH, OW, C, KH, KW) view of the kernel windows of NHWC ``x``."""
    strides = _ints(attr, "strides") or [1, 1, 1, 1]
    if any(d != 1 for d in _ints(attr, "dilations")):
        raise ReferenceError("dilated windows")
    sh, sw = strides[1], strides[2]
    padding = _s(attr, "padding")
    if padding == "SAME":
        x = _pad_same(x, kernel, (sh, sw), fill)
    elif padding != "VALID":
        raise ReferenceError(f"padding {padding}")
    view = sliding_window_view(x, kernel, axis=(1, 2))
    return view[:, ::sh, ::sw]


def _conv(x: np.ndarray, w: np.ndarray, attr: dict) -> np.ndarray:
    """NHWC convolution with an HWIO filter."""
    view = _windows(x, attr, w.shape[:2])  # N, OH, OW, I, KH, KW
    return np.einsum("nhwiyx,yxio->nhwo", view, w, optimize=True)


def _depthwise(x: np.ndarray, w: np.ndarray, attr: dict) -> np.ndarray:
    """NHWC depthwise convolution with an [H, W, C, M] filter; output channel c * M + m."""
    view = _windows(x, attr, w.shape[:2])
    out = np.einsum("nhwcyx,yxcm->nhwcm", view, w, optimize=True)
    return out.reshape(*out.shape[:3], -1)


def _prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, alpha * x)


def _fused(out: np.ndarray, attr: dict, extra: list[np.ndarray]) -> np.ndarray:
    for op in [base64.b64decode(s).decode() for s in attr.get("fused_ops", {}).get("list", {}).get("s", [])]:
        if op == "BiasAdd":
            out = out + extra.pop(0)
        elif op == "Relu":
            out = np.maximum(out, 0.0)
        elif op == "Prelu":
            out = _prelu(out, extra.pop(0))
        else:
            raise ReferenceError(f"fused op {op}")
    if extra:
        raise ReferenceError("unused fused-op arguments")
    return out


def _maxpool(x: np.ndarray, attr: dict) -> np.ndarray:
    k = _ints(attr, "ksize")
    return _windows(x, attr, (k[1], k[2]), fill=-np.inf).max(axis=(4, 5))


class ReferenceModel:
    """``ReferenceModel(json_bytes, read_file).run(nhwc_batch)`` → {signature output: array}."""

    def __init__(self, model_json: bytes, read_file: Callable[[str], bytes]):
        model = json.loads(model_json)
        self.nodes = {n["name"]: n for n in model["modelTopology"]["node"]}
        self.values = _weights(model, read_file)
        self.signature = model["signature"]

    def run(self, batch: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
        ((input_spec,),) = [list(self.signature["inputs"].values())]
        results: dict[str, np.ndarray] = {input_spec["name"].split(":")[0]: batch.astype(np.float64)}
        results.update(self.values)

        def value(name: str) -> np.ndarray:
            name = name.split(":")[0]
            if name not in results:
                results[name] = self._execute(self.nodes[name], value)
            return results[name]

        return {key: value(self.signature["outputs"][key]["name"]).astype(np.float64) for key in outputs}

    @staticmethod
    def _execute(node: dict, value: Callable[[str], np.ndarray]) -> np.ndarray:
        op, attr = node["op"], node.get("attr", {})
        args = [value(i) for i in node.get("input", [])]
        if op in ("Conv2D", "_FusedConv2D"):
            return _fused(_conv(args[0], args[1], attr), attr, args[2:])
        if op in ("DepthwiseConv2dNative", "_FusedDepthwiseConv2dNative"):
            return _fused(_depthwise(args[0], args[1], attr), attr, args[2:])
        if op in ("Add", "AddV2"):
            return args[0] + args[1]
        if op == "Prelu":
            return _prelu(args[0], args[1])
        if op == "Relu":
            return np.maximum(args[0], 0.0)
        if op == "Sigmoid":
            return 1.0 / (1.0 + np.exp(-args[0]))
        if op == "MaxPool":
            return _maxpool(args[0], attr)
        if op == "Pad":
            return np.pad(args[0], args[1].astype(np.int64).tolist())
        if op == "Reshape":
            return args[0].reshape(args[1].astype(np.int64).tolist())
        if op == "Identity":
            return args[0]
        raise ReferenceError(f"operator {op}")
