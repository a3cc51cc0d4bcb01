"""ONNX export: the graph runs in onnxruntime on raw rows and matches Model.predict."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from service.exports import export_model
from service.exports.onnx_export import export_onnx

from .conftest import CASE_IDS, dense

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

RTOL = ATOL = 1e-5


def _session(content: bytes):
    return ort.InferenceSession(content, providers=["CPUExecutionProvider"])


def _run(sess, X) -> np.ndarray:
    return sess.run(["output"], {"input": np.asarray(X, dtype=np.float32)})[0]


@pytest.mark.parametrize("case", CASE_IDS)
def test_onnx_matches_predict(export_cases, case):
    model_bytes, X = export_cases[case]
    model = engine.from_bytes(model_bytes)
    content = export_onnx(model_bytes)
    proto = onnx.load_from_string(content)
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # dynamic batch dimension, raw rows of the model's input shape in
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(model.input_shape)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # no training-only op survives
    assert not {n.op_type for n in proto.graph.node} & {"Dropout", "RandomNormalLike", "RandomNormal"}

    sess = _session(content)
    expected = model.predict(X)
    np.testing.assert_allclose(_run(sess, X), expected, rtol=RTOL, atol=ATOL)          # a batch
    np.testing.assert_allclose(_run(sess, X[:1]), expected[:1], rtol=RTOL, atol=ATOL)  # a single row
    np.testing.assert_allclose(_run(sess, X[5:22]), expected[5:22], rtol=RTOL, atol=ATOL)


def test_standardization_is_inside_the_graph(export_cases):
    model_bytes, X = export_cases["bn_activation_relu_tanh_elu_sigmoid"]
    proto = onnx.load_from_string(export_onnx(model_bytes))
    ops = [n.op_type for n in proto.graph.node]
    assert ops[:2] == ["Sub", "Div"]
    unstd = export_cases["regression_silu_softplus_unstandardized"][0]
    assert [n.op_type for n in onnx.load_from_string(export_onnx(unstd)).graph.node][0] not in ("Sub", "Div")


def _single_layer_model(activation: str, seed: int, **kw) -> engine.Model:
    m = engine.build({"input_shape": [4], "layers": [dense(6, activation, **kw)]}, seed=seed)
    ws = m.get_weights()
    ws[0] = (np.random.default_rng(seed).normal(size=ws[0].shape) * 3).astype(np.float32)
    ws[1] = np.linspace(-2, 2, ws[1].size, dtype=np.float32)
    m.set_weights(ws)
    return m


@pytest.mark.parametrize("activation,kw", [
    ("linear", {}), ("relu", {}), ("leaky_relu", {"alpha": 0.2}), ("leaky_relu", {}), ("sigmoid", {}),
    ("tanh", {}), ("softmax", {}), ("elu", {}), ("elu", {"alpha": 0.3}), ("selu", {}), ("gelu", {}),
    ("silu", {}), ("swish", {}), ("softplus", {})])
def test_every_activation(activation, kw):
    m = _single_layer_model(activation, seed=len(activation), **kw)
    sess = _session(export_onnx(m.to_bytes()))
    # small, moderate and very large pre-activations: saturation and overflow behaviour must match too
    X = np.concatenate([np.random.default_rng(0).normal(size=(64, 4)), np.linspace(-40, 40, 40).reshape(10, 4),
                        np.array([[1e3, -1e3, 5e2, -5e2]])]).astype(np.float32)
    np.testing.assert_allclose(_run(sess, X), m.predict(X), rtol=RTOL, atol=ATOL)


def test_batch_normalization_folding_and_explicit_forms():
    """A BN after a linear dense is folded into its Gemm; after a non-linear one it stays a Mul+Add."""
    spec = {"input_shape": [3], "layers": [dense(5), {"type": "dropout", "rate": 0.5}, {"type": "batch_normalization"},
                                           dense(4, "tanh"), {"type": "batch_normalization", "epsilon": 0.1},
                                           dense(2)]}
    m = engine.build(spec, seed=5)
    rng = np.random.default_rng(1)
    m.set_weights([(rng.normal(size=w.shape) + (2.0 if i in (4, 5, 10, 11) else 0)).astype(np.float32)
                   if i not in (5, 11) else rng.uniform(0.5, 3.0, size=w.shape).astype(np.float32)
                   for i, w in enumerate(m.get_weights())])
    proto = onnx.load_from_string(export_onnx(m.to_bytes()))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Gemm") == 3 and ops.count("Mul") == 1 and "BatchNormalization" not in ops
    X = rng.normal(size=(50, 3)).astype(np.float32) * 4
    np.testing.assert_allclose(_run(_session(proto.SerializeToString()), X), m.predict(X), rtol=RTOL, atol=ATOL)


def test_export_model_dispatch_onnx(export_cases):
    content, media_type, suffix = export_model(export_cases["float64_softmax_layer"][0], "onnx")
    assert suffix == ".onnx" and media_type == "application/octet-stream"
    onnx.checker.check_model(onnx.load_from_string(content))
