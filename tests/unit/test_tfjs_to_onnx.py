"""models/tfjs_to_onnx.py against models/tfjs_reference.py on a small synthetic TF.js graph.

The graph uses every operator the face mesh does (fused conv with BiasAdd + Prelu,
depthwise conv, SAME and VALID padding, strides, MaxPool, channel Pad, AddV2, Prelu,
Sigmoid, Reshape, Identity) and all three weight encodings (float32, float16-quantised,
uint8-quantised), so the converter is checked without the npm package. The converter
is build-time code; the ``test`` extra installs the onnx it needs.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "models"))
import tfjs_reference  # noqa: E402
import tfjs_to_onnx  # noqa: E402


def _s(text: str) -> dict:
    return {"s": base64.b64encode(text.encode()).decode()}


def _ints(*values: int) -> dict:
    return {"list": {"i": [str(v) for v in values]}}


def _conv_attr(strides: int, padding: str, fused: tuple[str, ...] = ()) -> dict:
    attr = {"strides": _ints(1, strides, strides, 1), "padding": _s(padding), "data_format": _s("NHWC"),
            "dilations": _ints(1, 1, 1, 1)}
    if fused:
        attr["fused_ops"] = {"list": {"s": [_s(op)["s"] for op in fused]}}
    return attr


def synthetic_model(extra_op: str | None = None) -> tuple[bytes, dict[str, bytes]]:
    rng = np.random.default_rng(7)
    weights: list[tuple[str, np.ndarray, str | None]] = [
        ("w1", rng.normal(0, 0.5, (3, 3, 2, 4)), "float16"),
        ("b1", rng.normal(0, 0.1, 4), None),
        ("a1", rng.uniform(-0.5, 0.5, (1, 1, 4)), "uint8"),
        ("dw", rng.normal(0, 0.5, (3, 3, 4, 1)), "float16"),
        ("pads", np.array([[0, 0], [0, 0], [0, 0], [0, 2]]), None),
        ("w2", rng.normal(0, 0.5, (1, 1, 4, 6)), None),
        ("b2", rng.normal(0, 0.1, 6), None),
        ("a2", rng.uniform(0, 0.3, (1, 1, 6)), None),
        ("w3", rng.normal(0, 0.3, (3, 3, 6, 5)), "float16"),
        ("shape", np.array([-1, 5]), None),
    ]
    nodes = [{"name": "input_1", "op": "Placeholder",
              "attr": {"shape": {"shape": {"dim": [{"size": "-1"}, {"size": "9"}, {"size": "9"}, {"size": "2"}]}}}}]
    nodes += [{"name": name, "op": "Const", "attr": {}} for name, _, _ in weights]
    nodes += [
        {"name": "c1", "op": "_FusedConv2D", "input": ["input_1", "w1", "b1", "a1"],
         "attr": _conv_attr(2, "SAME", ("BiasAdd", "Prelu"))},
        {"name": "d1", "op": "DepthwiseConv2dNative", "input": ["c1", "dw"], "attr": _conv_attr(1, "SAME")},
        {"name": "mp", "op": "MaxPool", "input": ["d1"],
         "attr": {"ksize": _ints(1, 2, 2, 1), "strides": _ints(1, 2, 2, 1), "padding": _s("SAME")}},
        {"name": "padded", "op": "Pad", "input": ["mp", "pads"], "attr": {}},
        {"name": "c2", "op": "_FusedConv2D", "input": ["mp", "w2", "b2"], "attr": _conv_attr(1, "VALID", ("BiasAdd",))},
        {"name": "sum", "op": "AddV2", "input": ["padded", "c2"], "attr": {}},
        {"name": "pr", "op": "Prelu", "input": ["sum", "a2"], "attr": {}},
        {"name": "c3", "op": "Conv2D", "input": ["pr", "w3"], "attr": _conv_attr(1, "VALID")},
        {"name": "sig", "op": extra_op or "Sigmoid", "input": ["c3"], "attr": {}},
        {"name": "flat", "op": "Reshape", "input": ["sig", "shape"], "attr": {}},
        {"name": "Identity", "op": "Identity", "input": ["flat"], "attr": {}},
    ]
    specs, data = [], b""
    for name, array, stored in weights:
        spec = {"name": name, "shape": list(array.shape), "dtype": "int32" if array.dtype.kind == "i" else "float32"}
        if stored == "float16":
            spec["quantization"] = {"dtype": "float16", "original_dtype": "float32"}
            data += array.astype("<f2").tobytes()
        elif stored == "uint8":
            low, scale = float(array.min()), float(array.max() - array.min()) / 255
            spec["quantization"] = {"dtype": "uint8", "min": low, "scale": scale, "original_dtype": "float32"}
            data += np.round((array - low) / scale).astype(np.uint8).tobytes()
        else:
            data += array.astype("<i4" if spec["dtype"] == "int32" else "<f4").tobytes()
        specs.append(spec)
    model = {
        "format": "graph-model",
        "modelTopology": {"node": nodes},
        "signature": {"inputs": {"input_1": {"name": "input_1:0"}}, "outputs": {"out": {"name": "Identity:0"}}},
        "weightsManifest": [{"paths": ["group1-shard1of1.bin"], "weights": specs}],
    }
    return json.dumps(model).encode(), {"group1-shard1of1.bin": data}


def convert(model_json: bytes, shards: dict[str, bytes]) -> bytes:
    graph = tfjs_to_onnx.load_graph(model_json, shards.__getitem__)
    model = tfjs_to_onnx.convert(graph, input_dims=["batch", 9, 9, 2], outputs={"out": ["batch", 5]}, doc="t",
                                 producer="test")
    return model.SerializeToString()


def test_converted_graph_matches_the_numpy_interpreter():
    model_json, shards = synthetic_model()
    session = ort.InferenceSession(convert(model_json, shards), providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(1).normal(0, 1, (3, 9, 9, 2)).astype(np.float32)

    (got,) = session.run(["out"], {"input_1": batch})
    expected = tfjs_reference.ReferenceModel(model_json, shards.__getitem__).run(batch, ["out"])["out"]

    assert got.shape == (3, 5)
    assert np.abs(got - expected).max() < 1e-5


def test_uint8_weights_are_dequantised_as_tfjs_does():
    spec = {"name": "w", "shape": [3], "dtype": "float32",
            "quantization": {"dtype": "uint8", "min": -1.0, "scale": 0.5, "original_dtype": "float32"}}
    values = tfjs_to_onnx.dequantise(bytes([0, 2, 255]), spec)
    assert values.tolist() == [-1.0, 0.0, 126.5]


def test_an_operator_it_does_not_know_is_refused():
    model_json, shards = synthetic_model(extra_op="Tanh")
    with pytest.raises(tfjs_to_onnx.UnsupportedModel, match="operator Tanh"):
        convert(model_json, shards)
