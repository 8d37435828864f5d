"""A small TF.js graph-model → ONNX converter for the float graphs that ``models/build.py`` ships.

A TF.js graph model is a JSON file (``modelTopology``: a TensorFlow GraphDef as JSON;
``weightsManifest``: where each constant's bytes are) plus binary weight shards. This
module reads both, dequantises the weights exactly as TF.js does (float16 → float32;
uint8/uint16 affine: ``q * scale + min``), and emits ONNX opset 18 with ``onnx.helper``.

It covers exactly the operators of the face-mesh graph (Conv2D/_FusedConv2D with
BiasAdd, Relu or Prelu fused, DepthwiseConv2dNative/_FusedDepthwiseConv2dNative, Add/
AddV2, Prelu, Relu, Sigmoid, MaxPool, Pad, Reshape, Identity) and refuses anything else,
so a surprise in a new source file stops the build instead of changing the network.
Nodes that feed none of the requested outputs are dropped.

The ONNX graph keeps the TF.js input in its NHWC layout, so callers preprocess exactly
as for TF.js. Inside, 4-D tensors live in NCHW (weights transposed once at build time);
a Transpose back to NHWC is emitted only where a tensor must be seen in its original
layout (before Reshape, and at graph outputs).

Build-time only; never imported by the service.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Opset 18 and IR 8, as models/tflite_to_onnx.py: served by every onnxruntime the project allows.
OPSET = 18
IR_VERSION = 8

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)

Dims = Sequence[int | str]

_DTYPES = {"float32": np.float32, "int32": np.int32}
_QUANTISED = {"float16": np.float16, "uint8": np.uint8, "uint16": np.uint16}
_FUSABLE = {"Relu", "Prelu"}


class UnsupportedModel(ValueError):
    """The TF.js graph uses something this converter does not translate."""


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    attr: Mapping


@dataclass(frozen=True)
class TfjsGraph:
    """A parsed TF.js graph model: nodes by name, constants, signature input/outputs."""

    nodes: dict[str, Node]
    constants: dict[str, np.ndarray]
    # Signature name → tensor (node) name, e.g. "output_mesh" → "Identity_2".
    inputs: dict[str, str]
    outputs: dict[str, str]

    def topological(self, wanted: Sequence[str]) -> list[Node]:
        """The nodes the ``wanted`` tensors depend on, each after its inputs."""
        order: list[Node] = []
        state: dict[str, str] = {}
        for root in wanted:
            stack = [(root, False)]
            while stack:
                name, expanded = stack.pop()
                if expanded:
                    state[name] = "done"
                    order.append(self.nodes[name])
                    continue
                if state.get(name) == "done":
                    continue
                if state.get(name) == "open":
                    raise UnsupportedModel(f"cycle through {name}")
                if name not in self.nodes:
                    raise UnsupportedModel(f"input {name} names no node")
                state[name] = "open"
                stack.append((name, True))
                stack.extend((i, False) for i in reversed(self.nodes[name].inputs) if state.get(i) != "done")
        return order


def tensor_name(reference: str) -> str:
    """``"node:0"`` → ``"node"``; refuses control inputs and other output indices."""
    if reference.startswith("^"):
        raise UnsupportedModel(f"control input {reference}")
    name, _, index = reference.partition(":")
    if index not in ("", "0"):
        raise UnsupportedModel(f"{reference}: only single-output nodes are supported")
    return name


def dequantise(raw: bytes, spec: Mapping) -> np.ndarray:
    """One weight entry's bytes → its values, exactly as TF.js's ``decodeWeights`` computes them."""
    dtype = spec["dtype"]
    if dtype not in _DTYPES:
        raise UnsupportedModel(f"weight {spec['name']}: dtype {dtype}")
    shape = [int(d) for d in spec["shape"]]
    quantisation = spec.get("quantization")
    if quantisation is None:
        values = np.frombuffer(raw, dtype=np.dtype(_DTYPES[dtype]).newbyteorder("<"))
    else:
        stored = quantisation["dtype"]
        if stored not in _QUANTISED or dtype != "float32":
            raise UnsupportedModel(f"weight {spec['name']}: quantisation {stored} of {dtype}")
        stored_values = np.frombuffer(raw, dtype=np.dtype(_QUANTISED[stored]).newbyteorder("<"))
        if stored == "float16":
            # Every float16 is exactly representable in float32.
            values = stored_values.astype(np.float32)
        else:
            # TF.js computes q * scale + min in float32.
            values = stored_values.astype(np.float32) * np.float32(quantisation["scale"]) + np.float32(
                quantisation["min"]
            )
    if values.size != math.prod(shape):
        raise UnsupportedModel(f"weight {spec['name']}: {values.size} values for shape {shape}")
    return values.reshape(shape).astype(_DTYPES[dtype])


def weight_byte_count(spec: Mapping) -> int:
    quantisation = spec.get("quantization")
    dtype = quantisation["dtype"] if quantisation else spec["dtype"]
    itemsize = np.dtype(_QUANTISED.get(dtype) or _DTYPES.get(dtype) or np.uint8).itemsize
    return math.prod(int(d) for d in spec["shape"]) * itemsize


def load_graph(model_json: bytes, read_file) -> TfjsGraph:
    """Parse a TF.js graph model; ``read_file(path)`` returns a weight shard's bytes by relative path."""
    model = json.loads(model_json)
    if model.get("format") != "graph-model":
        raise UnsupportedModel(f"format {model.get('format')!r} is not a TF.js graph model")
    topology = model["modelTopology"]
    if topology.get("library", {}).get("function"):
        raise UnsupportedModel("graphs with functions (control flow) are not supported")
    nodes = {}
    for raw in topology["node"]:
        node = Node(raw["name"], raw["op"], tuple(tensor_name(i) for i in raw.get("input", [])), raw.get("attr", {}))
        if node.name in nodes:
            raise UnsupportedModel(f"two nodes named {node.name}")
        nodes[node.name] = node
    constants = {}
    for group in model["weightsManifest"]:
        # The shards of a group are one byte stream, cut into files.
        data = b"".join(read_file(str(PurePosixPath(path))) for path in group["paths"])
        offset = 0
        for spec in group["weights"]:
            size = weight_byte_count(spec)
            constants[spec["name"]] = dequantise(data[offset : offset + size], spec)
            offset += size
        if offset != len(data):
            raise UnsupportedModel(f"weight shards {group['paths']}: {len(data) - offset} bytes left over")
    for node in nodes.values():
        if node.op == "Const" and node.name not in constants:
            raise UnsupportedModel(f"constant {node.name} has no weight data")
    signature = model.get("signature", {})
    inputs = {key: tensor_name(v["name"]) for key, v in signature.get("inputs", {}).items()}
    outputs = {key: tensor_name(v["name"]) for key, v in signature.get("outputs", {}).items()}
    if not inputs or not outputs:
        raise UnsupportedModel("the model has no signature naming its inputs and outputs")
    return TfjsGraph(nodes, constants, inputs, outputs)


def convert(
    graph: TfjsGraph,
    *,
    input_dims: Dims,
    outputs: Mapping[str, Dims],
    doc: str,
    producer: str,
) -> onnx.ModelProto:
    """Convert the part of ``graph`` that computes the signature ``outputs`` to ONNX.

    ``input_dims`` is the ONNX shape of the single NHWC input (a string names a dynamic
    dim, e.g. "batch"; the spatial dims must be fixed). ``outputs`` maps signature output
    names to their ONNX dims; the ONNX graph's input and outputs carry the signature names.
    """
    return _Converter(graph, list(input_dims)).build(outputs, doc, producer)


def _attr_s(node: Node, key: str, default: str | None = None) -> str:
    value = node.attr.get(key, {}).get("s")
    if value is None:
        if default is None:
            raise UnsupportedModel(f"{node.name}: attribute {key} missing")
        return default
    return base64.b64decode(value).decode()


def _attr_ints(node: Node, key: str) -> list[int]:
    return [int(i) for i in node.attr.get(key, {}).get("list", {}).get("i", [])]


def _attr_strings(node: Node, key: str) -> list[str]:
    return [base64.b64decode(s).decode() for s in node.attr.get(key, {}).get("list", {}).get("s", [])]


def same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's SAME padding along one axis: the odd pixel goes after (bottom/right)."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Converter:
    def __init__(self, graph: TfjsGraph, input_dims: list[int | str]):
        if len(graph.inputs) != 1:
            raise UnsupportedModel("expected exactly one input")
        ((self.input_key, self.input_node),) = graph.inputs.items()
        if len(input_dims) != 4 or not all(isinstance(d, int) for d in input_dims[1:]):
            raise UnsupportedModel(f"input dims {input_dims}: need NHWC with fixed H, W, C")
        self.graph = graph
        self.input_dims = input_dims
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        # TF.js tensor → ONNX name in its own (NHWC) layout / in NCHW; static NHWC shape (batch = -1).
        self.as_nhwc: dict[str, str] = {}
        self.as_nchw: dict[str, str] = {}
        self.shapes: dict[str, list[int]] = {}

    # --- ONNX emission ------------------------------------------------------------

    def initializer(self, name: str, array: np.ndarray) -> str:
        if name in self.initializers:
            raise UnsupportedModel(f"two constants named {name}")
        self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(array), name)
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def nhwc(self, name: str) -> str:
        if name not in self.as_nhwc:
            self.as_nhwc[name] = self.node("Transpose", [self.as_nchw[name]], name + ":nhwc", perm=NCHW_TO_NHWC)
        return self.as_nhwc[name]

    def nchw(self, name: str) -> str:
        if name not in self.as_nchw:
            if len(self.shapes[name]) != 4:
                raise UnsupportedModel(f"{name}: a 4-D tensor is needed here")
            self.as_nchw[name] = self.node("Transpose", [self.as_nhwc[name]], name + ":nchw", perm=NHWC_TO_NCHW)
        return self.as_nchw[name]

    def const(self, name: str) -> np.ndarray:
        if self.graph.nodes[name].op != "Const":
            raise UnsupportedModel(f"{name} must be a constant")
        return self.graph.constants[name]

    # --- the graph ----------------------------------------------------------------

    def build(self, outputs: Mapping[str, Dims], doc: str, producer: str) -> onnx.ModelProto:
        unknown = set(outputs) - set(self.graph.outputs)
        if unknown:
            raise UnsupportedModel(f"the signature has no output(s) {sorted(unknown)}")
        wanted = [self.graph.outputs[key] for key in outputs]
        for node in self.graph.topological(wanted):
            if node.op == "Const":
                continue
            handler = getattr(self, "op_" + node.op.lstrip("_"), None)
            if handler is None:
                raise UnsupportedModel(f"operator {node.op} ({node.name}) is not supported")
            _check_data_format(node)
            handler(node)

        graph_outputs = []
        for key, dims in outputs.items():
            name = self.graph.outputs[key]
            shape = self.shapes[name]
            if len(dims) != len(shape) or any(isinstance(d, int) and d != s for d, s in zip(dims, shape)):
                raise UnsupportedModel(f"output {key}: dims {list(dims)} do not fit {shape}")
            self.node("Identity", [self.nhwc(name)], key)
            graph_outputs.append(helper.make_tensor_value_info(key, TensorProto.FLOAT, list(dims)))
        graph = helper.make_graph(
            self.nodes,
            "main",
            [helper.make_tensor_value_info(self.input_key, TensorProto.FLOAT, self.input_dims)],
            graph_outputs,
            initializer=list(self.initializers.values()),
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            ir_version=IR_VERSION,
            producer_name=producer,
            doc_string=doc,
        )
        onnx.checker.check_model(model, full_check=True)
        return model

    # --- operators ------------------------------------------------------------------

    def op_Placeholder(self, node: Node) -> None:
        if node.name != self.input_node:
            raise UnsupportedModel(f"placeholder {node.name} is not the signature input")
        dims = node.attr["shape"]["shape"]["dim"]
        declared = [int(d.get("size", -1)) for d in dims]
        given = [-1 if isinstance(d, str) else d for d in self.input_dims]
        if len(declared) != 4 or any(d != -1 and d != g for d, g in zip(declared, given)):
            raise UnsupportedModel(f"input dims {self.input_dims} do not fit the placeholder's {declared}")
        self.as_nhwc[node.name] = self.input_key
        self.shapes[node.name] = given

    def op_Identity(self, node: Node) -> None:
        (x,) = node.inputs
        for table in (self.as_nhwc, self.as_nchw):
            if x in table:
                table[node.name] = table[x]
        self.shapes[node.name] = self.shapes[x]

    def unary(self, onnx_op: str, node: Node) -> None:
        (x,) = node.inputs
        if x in self.as_nchw:
            self.as_nchw[node.name] = self.node(onnx_op, [self.as_nchw[x]], node.name + ":nchw")
        else:
            self.as_nhwc[node.name] = self.node(onnx_op, [self.as_nhwc[x]], node.name)
        self.shapes[node.name] = self.shapes[x]

    def op_Relu(self, node: Node) -> None:
        self.unary("Relu", node)

    def op_Sigmoid(self, node: Node) -> None:
        self.unary("Sigmoid", node)

    def slope(self, name: str, channels: int) -> str:
        """A Prelu alpha as an NCHW-broadcastable [1, C, 1, 1] initializer."""
        alpha = self.const(name).astype(np.float32)
        if alpha.size != channels or any(d != 1 for d in alpha.shape[:-1]):
            raise UnsupportedModel(f"{name}: Prelu alpha of shape {alpha.shape} for {channels} channels")
        key = name + ":slope"
        if key not in self.initializers:
            self.initializer(key, alpha.reshape(1, channels, 1, 1))
        return key

    def op_Prelu(self, node: Node) -> None:
        x, alpha = node.inputs
        shape = self.shapes[x]
        self.as_nchw[node.name] = self.node(
            "PRelu", [self.nchw(x), self.slope(alpha, shape[3])], node.name + ":nchw"
        )
        self.shapes[node.name] = shape

    def binary(self, onnx_op: str, node: Node) -> None:
        a, b = node.inputs
        for operand in (a, b):
            if self.graph.nodes[operand].op == "Const":
                raise UnsupportedModel(f"{node.name}: constant operands are not supported")
        if self.shapes[a] != self.shapes[b]:
            raise UnsupportedModel(f"{node.name}: broadcasting {self.shapes[a]} with {self.shapes[b]}")
        if len(self.shapes[a]) == 4:
            self.as_nchw[node.name] = self.node(onnx_op, [self.nchw(a), self.nchw(b)], node.name + ":nchw")
        else:
            self.as_nhwc[node.name] = self.node(onnx_op, [self.as_nhwc[a], self.as_nhwc[b]], node.name)
        self.shapes[node.name] = self.shapes[a]

    def op_Add(self, node: Node) -> None:
        self.binary("Add", node)

    def op_AddV2(self, node: Node) -> None:
        self.binary("Add", node)

    def window(self, node: Node, x: str, kernel: list[int]) -> tuple[dict, list[int]]:
        """ONNX strides/dilations/pads of a conv or pool node, and its output shape."""
        strides = _attr_ints(node, "strides") or [1, 1, 1, 1]
        dilations = _attr_ints(node, "dilations") or [1, 1, 1, 1]
        if strides[0] != 1 or strides[3] != 1 or dilations[0] != 1 or dilations[3] != 1:
            raise UnsupportedModel(f"{node.name}: strides/dilations over batch or channels")
        padding = _attr_s(node, "padding")
        n, h, w, _ = self.shapes[x]
        if padding == "VALID":
            pads = [(0, 0), (0, 0)]
        elif padding == "SAME":
            pads = [same_pads(size, k, s, d) for size, k, s, d in zip((h, w), kernel, strides[1:3], dilations[1:3])]
        else:
            raise UnsupportedModel(f"{node.name}: padding {padding}")
        out = [
            (size + p0 + p1 - ((k - 1) * d + 1)) // s + 1
            for size, (p0, p1), k, s, d in zip((h, w), pads, kernel, strides[1:3], dilations[1:3])
        ]
        attrs = {
            "strides": strides[1:3],
            "dilations": dilations[1:3],
            "pads": [pads[0][0], pads[1][0], pads[0][1], pads[1][1]],
        }
        return attrs, [n, *out]

    def conv(self, node: Node, weights: np.ndarray, group: int) -> None:
        """Conv with OIHW ``weights``, then the node's fused BiasAdd and activation."""
        fused = _attr_strings(node, "fused_ops")
        x, _, *extra = node.inputs
        if fused[:1] == ["BiasAdd"]:
            bias, *extra = extra
            activations = fused[1:]
        elif not fused:
            bias, activations = None, []
        else:
            raise UnsupportedModel(f"{node.name}: fused ops {fused}")
        if len(activations) > 1 or not set(activations) <= _FUSABLE:
            raise UnsupportedModel(f"{node.name}: fused activation {activations}")
        if len(extra) != (1 if activations == ["Prelu"] else 0):
            raise UnsupportedModel(f"{node.name}: {len(node.inputs)} inputs for fused ops {fused}")
        attrs, shape = self.window(node, x, list(weights.shape[2:]))
        inputs = [self.nchw(x), self.initializer(node.name + ":weights", weights)]
        if bias is not None:
            inputs.append(self.initializer(node.name + ":bias", self.const(bias).astype(np.float32)))
        result = self.node(
            "Conv", inputs, node.name + (":conv" if activations else ":nchw"),
            kernel_shape=list(weights.shape[2:]), group=group, **attrs,
        )
        channels = weights.shape[0]
        if activations == ["Relu"]:
            result = self.node("Relu", [result], node.name + ":nchw")
        elif activations == ["Prelu"]:
            result = self.node("PRelu", [result, self.slope(extra[0], channels)], node.name + ":nchw")
        self.as_nchw[node.name] = result
        self.shapes[node.name] = [*shape, channels]

    def op_Conv2D(self, node: Node) -> None:
        # TF HWIO → ONNX OIHW.
        self.conv(node, self.const(node.inputs[1]).astype(np.float32).transpose(3, 2, 0, 1), group=1)

    def op_FusedConv2D(self, node: Node) -> None:
        self.op_Conv2D(node)

    def op_DepthwiseConv2dNative(self, node: Node) -> None:
        filters = self.const(node.inputs[1]).astype(np.float32)  # [H, W, C, multiplier]
        height, width, channels, multiplier = filters.shape
        if channels != self.shapes[node.inputs[0]][3]:
            raise UnsupportedModel(f"{node.name}: depthwise filter for {channels} channels")
        # TF output channel c * multiplier + m → ONNX grouped conv [C * multiplier, 1, H, W].
        weights = filters.transpose(2, 3, 0, 1).reshape(channels * multiplier, 1, height, width)
        self.conv(node, weights, group=channels)

    def op_FusedDepthwiseConv2dNative(self, node: Node) -> None:
        self.op_DepthwiseConv2dNative(node)

    def op_MaxPool(self, node: Node) -> None:
        (x,) = node.inputs
        ksize = _attr_ints(node, "ksize")
        if len(ksize) != 4 or ksize[0] != 1 or ksize[3] != 1:
            raise UnsupportedModel(f"{node.name}: ksize {ksize}")
        attrs, shape = self.window(node, x, ksize[1:3])
        del attrs["dilations"]
        # Padded cells never win: TF skips them, ONNX pads with -inf.
        self.as_nchw[node.name] = self.node(
            "MaxPool", [self.nchw(x)], node.name + ":nchw", kernel_shape=ksize[1:3], **attrs
        )
        self.shapes[node.name] = [*shape, self.shapes[x][3]]

    def op_Pad(self, node: Node) -> None:
        x, paddings = node.inputs
        pads = self.const(paddings).astype(np.int64)
        shape = self.shapes[x]
        if pads.shape != (len(shape), 2) or (pads < 0).any() or (len(shape) == 4 and pads[0].any()):
            raise UnsupportedModel(f"{node.name}: paddings {pads.tolist()}")
        if len(shape) == 4:
            nchw = pads[list(NHWC_TO_NCHW)]
            pads_name = self.initializer(node.name + ":pads", np.concatenate([nchw[:, 0], nchw[:, 1]]))
            self.as_nchw[node.name] = self.node("Pad", [self.nchw(x), pads_name], node.name + ":nchw")
        else:
            pads_name = self.initializer(node.name + ":pads", np.concatenate([pads[:, 0], pads[:, 1]]))
            self.as_nhwc[node.name] = self.node("Pad", [self.as_nhwc[x], pads_name], node.name)
        self.shapes[node.name] = [d if d < 0 else d + int(p.sum()) for d, p in zip(shape, pads)]

    def op_Reshape(self, node: Node) -> None:
        x, target_name = node.inputs
        target = self.const(target_name).astype(np.int64)
        known = math.prod(d for d in self.shapes[x][1:])
        if target[0] != -1 or (target[1:] < 0).any() or math.prod(target[1:].tolist()) != known:
            # Only "keep the batch, reshape the rest" is safe with a dynamic batch.
            raise UnsupportedModel(f"{node.name}: reshape to {target.tolist()}")
        shape = self.initializer(node.name + ":shape", target)
        self.as_nhwc[node.name] = self.node("Reshape", [self.nhwc(x), shape], node.name)
        self.shapes[node.name] = target.tolist()


def _check_data_format(node: Node) -> None:
    if _attr_s(node, "data_format", "NHWC") != "NHWC":
        raise UnsupportedModel(f"{node.name}: data format is not NHWC")
