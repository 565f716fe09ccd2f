"""`fsd export --quantize int8`: refused in one line outside ONNX; on an ONNX network, int8
weights that onnxruntime runs and that answer close to the float network."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_int8_is_for_onnx_exports_only(tmp_path):
    from fsd.export.writer import ExportError, export_ensemble

    for fmt in ("saved_model", "litert"):
        with pytest.raises(ExportError, match="ONNX exports only") as exc:
            export_ensemble(object(), tmp_path / fmt, fmt, quantize="int8")
        assert "\n" not in str(exc.value)
    with pytest.raises(ExportError, match="quantize ops"):
        export_ensemble(object(), tmp_path / "x", "onnx", quantize="int8", quantize_ops="conv")
    assert not any(tmp_path.iterdir())  # refused before anything was written


def _dense_net(path, rng) -> None:
    """x (batch, 64) -> MatMul -> Relu -> MatMul -> Softmax, float32 weights."""
    from onnx import TensorProto, helper, numpy_helper

    w1 = numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32) / 8, "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((32, 5)).astype(np.float32) / 4, "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["z"]),
             helper.make_node("Softmax", ["z"], ["p"], axis=-1)]
    graph = helper.make_graph(
        nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None, 5])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.mark.parametrize("ops", ["all", "matmul"])
def test_int8_weights_answer_close_to_the_float_network(tmp_path, ops):
    from fsd.export.quantize import quantization_spec, quantize_onnx

    rng = np.random.default_rng(0)
    src, dst = tmp_path / "net.onnx", tmp_path / "net.int8.onnx"
    _dense_net(src, rng)
    quantize_onnx(src, dst, ops)
    kinds = {n.op_type for n in onnx.load(dst).graph.node}
    assert "MatMulInteger" in kinds and "MatMul" not in kinds
    assert dst.stat().st_size < src.stat().st_size
    x = rng.standard_normal((200, 64)).astype(np.float32)
    run = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
           for p in (src, dst)]
    assert np.abs(run[0] - run[1]).max() < 0.05
    assert (run[0].argmax(1) == run[1].argmax(1)).mean() > 0.9
    spec = quantization_spec("int8", ops)
    assert spec["weights"] == "int8" and spec["ops"] == ops
    assert quantization_spec("none", ops) is None
