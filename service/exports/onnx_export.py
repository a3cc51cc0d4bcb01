"""ONNX export of a trained Backprop model.

``export_onnx(model_bytes) -> bytes`` returns a serialized ``ModelProto`` (default opset 17, float32)
built with the ``onnx`` package's helper API:

* input ``input``: float32 ``[batch, *input_shape]`` (raw rows, exactly what predict takes; ``batch``
  is a symbolic dimension); output ``output``: float32 ``[batch, units]`` (the output activations:
  probabilities for softmax/sigmoid heads, values for regression).
* Standardization, when the model carries it, is the first thing in the graph: ``Sub(mean)`` then
  ``Div(std)``, so the graph takes raw rows.
* ``flatten`` → ``Flatten(axis=1)``; ``dense`` → ``Gemm(x, W, b)`` (``MatMul`` when use_bias is off);
  batch normalization in inference form: folded into the preceding Gemm when that dense layer has a
  linear activation (exact algebra in float64: W·s, (b - μ)·s + β with s = γ/√(σ²+ε)), otherwise a
  ``Mul(s)`` + ``Add(β - μ·s)``.
* Activations: relu ``Relu``; leaky_relu ``LeakyRelu(alpha)``; sigmoid ``Sigmoid``; tanh ``Tanh``;
  softmax ``Softmax(axis=-1)``; elu ``Elu(alpha)``; selu ``Selu`` with Keras's constants; gelu exact
  ``x·½(1 + Erf(x/√2))``; silu/swish ``x·Sigmoid(x)``; softplus ``Softplus``; linear nothing.
* Dropout and Gaussian noise are the identity at inference and leave no node.

Only ``onnx`` is needed to build the graph (it is a runtime dependency of this export); onnxruntime
is used by the tests alone.
"""
from __future__ import annotations

import math

import numpy as np

import engine
from service.exports.names import UniqueNames

OPSET = 17
SELU_ALPHA = 1.6732632423543772
SELU_SCALE = 1.0507009873554805


class _Graph:
    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes = []
        self.initializers = []
        self.name = UniqueNames(empty="t")

    def const(self, base: str, value) -> str:
        name = self.name(base)
        arr = np.ascontiguousarray(np.asarray(value, dtype=np.float32))
        self.initializers.append(self.numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], base: str, **attrs) -> str:
        out = self.name(base)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=self.name(f"{base}_{op_type}"),
                                                **attrs))
        return out


def _activation(g: _Graph, x: str, name: str, alpha, base: str) -> str:
    if name == "linear":
        return x
    if name == "relu":
        return g.op("Relu", [x], base)
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], base, alpha=float(0.01 if alpha is None else alpha))
    if name == "sigmoid":
        return g.op("Sigmoid", [x], base)
    if name == "tanh":
        return g.op("Tanh", [x], base)
    if name == "softmax":
        return g.op("Softmax", [x], base, axis=-1)
    if name == "elu":
        return g.op("Elu", [x], base, alpha=float(1.0 if alpha is None else alpha))
    if name == "selu":
        return g.op("Selu", [x], base, alpha=SELU_ALPHA, gamma=SELU_SCALE)
    if name == "gelu":
        # exact form, as the engine and keras.activations.gelu(approximate=False): ½x(1 + erf(x/√2))
        scaled = g.op("Mul", [x, g.const(f"{base}_inv_sqrt2", 1.0 / math.sqrt(2.0))], f"{base}_scaled")
        erf = g.op("Erf", [scaled], f"{base}_erf")
        cdf = g.op("Add", [erf, g.const(f"{base}_one", 1.0)], f"{base}_erf1")
        half_x = g.op("Mul", [x, g.const(f"{base}_half", 0.5)], f"{base}_halfx")
        return g.op("Mul", [half_x, cdf], base)
    if name in ("silu", "swish"):
        return g.op("Mul", [x, g.op("Sigmoid", [x], f"{base}_sigmoid")], base)
    if name == "softplus":
        return g.op("Softplus", [x], base)
    raise ValueError(f"activation {name!r} has no ONNX export")


def _bn_affine(layer) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) in float64 of a batch normalization layer in inference form."""
    gamma = layer.params["gamma"].astype(np.float64)
    beta = layer.params["beta"].astype(np.float64)
    mean = layer.buffers["moving_mean"].astype(np.float64)
    var = layer.buffers["moving_variance"].astype(np.float64)
    s = gamma / np.sqrt(var + float(layer.epsilon))
    return s, beta - mean * s


def build_graph(model, opset: int = OPSET):
    """The ``onnx.ModelProto`` for an engine ``Model``."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph()
    out_name = g.name("output")
    x = g.name("input")
    input_shape = [int(d) for d in model.input_shape]
    inp = helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", *input_shape])
    if model.standardization is not None:
        mean, std = (np.asarray(a, dtype=np.float64).reshape(input_shape) for a in model.standardization)
        x = g.op("Sub", [x, g.const("standardization_mean", mean)], "centered")
        x = g.op("Div", [x, g.const("standardization_std", std)], "standardized")

    layers = list(model.layers)
    i = 0
    while i < len(layers):
        layer = layers[i]
        kind = layer.type
        base = layer.name
        if kind == "dense":
            W = layer.params["kernel"].astype(np.float64)
            b = layer.params["bias"].astype(np.float64) if layer.use_bias else None
            act = layer.activation
            # fold a batch normalization that follows directly (dropout/noise in between are identities)
            j = i + 1
            while j < len(layers) and layers[j].type in ("dropout", "gaussian_noise"):
                j += 1
            if act.name == "linear" and j < len(layers) and layers[j].type == "batch_normalization":
                s, t = _bn_affine(layers[j])
                W = W * s[None, :]
                b = (np.zeros(W.shape[1]) if b is None else b) * s + t
                base = f"{base}_{layers[j].name}"
                i = j
                act = None
            if b is None:
                x = g.op("MatMul", [x, g.const(f"{layer.name}_kernel", W)], base)
            else:
                x = g.op("Gemm", [x, g.const(f"{layer.name}_kernel", W), g.const(f"{layer.name}_bias", b)], base)
            if act is not None:
                x = _activation(g, x, act.name, act.alpha, f"{layer.name}_{act.name}")
        elif kind == "batch_normalization":
            s, t = _bn_affine(layer)
            x = g.op("Mul", [x, g.const(f"{base}_scale", s)], f"{base}_scaled")
            x = g.op("Add", [x, g.const(f"{base}_shift", t)], base)
        elif kind == "flatten":
            x = g.op("Flatten", [x], base, axis=1)
        elif kind == "activation":
            x = _activation(g, x, layer.activation.name, layer.activation.alpha, base)
        elif kind in ("dropout", "gaussian_noise"):
            pass
        else:
            raise ValueError(f"layer type {kind!r} has no ONNX export")
        i += 1

    g.nodes.append(helper.make_node("Identity", [x], [out_name], name="output_Identity"))
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["batch", int(model.output_units)])
    graph = helper.make_graph(g.nodes, "backprop_model", [inp], [out], initializer=g.initializers)
    opsets = [helper.make_opsetid("", int(opset))]
    try:
        ir_version = helper.find_min_ir_version_for(opsets)
    except Exception:      # very old onnx: IR 8 goes with opset 17
        ir_version = 8
    proto = helper.make_model(graph, opset_imports=opsets, producer_name="backprop", ir_version=ir_version)
    proto.doc_string = ("Backprop model: raw feature rows in (standardization inside the graph), "
                        "output activations out.")
    helper.set_model_props(proto, {"input_shape": ",".join(map(str, input_shape)),
                                   "standardized": str(model.standardization is not None).lower()})
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export_onnx(model_bytes: bytes, opset: int = OPSET) -> bytes:
    """The serialized ONNX model (see the module docstring)."""
    if opset < 17:
        raise ValueError(f"opset {opset} is too old; 17 or later")
    return build_graph(engine.from_bytes(model_bytes), opset).SerializeToString()


__all__ = ["export_onnx", "build_graph", "OPSET"]
