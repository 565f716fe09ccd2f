"""int8 weights for an ONNX export (``fsd export --quantize int8``): onnxruntime's dynamic
quantization of each fold network's ONNX file.

Dynamic quantization stores the chosen operators' weights as int8 (per tensor, symmetric) and
quantizes their activations at run time, per batch, from the values seen: no calibration
data. ``ops`` picks the operators: ``all`` (onnxruntime's default set for dynamic mode: the
convolutions become ConvInteger, the dense layers MatMulInteger) or ``matmul`` (MatMul and
Gemm only: the dense layers; the convolutions stay float32). Whether either is faster or as
accurate is measured, not assumed (``benchmarks/quantize.py``; ``docs/export.md``).

The quantized file is an ordinary ONNX model: :class:`fsd.export.predictor.ExportedModel` runs
it as it runs a float one; the manifest's ``quantization`` says how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

QUANTIZE = ("none", "int8")
QUANTIZE_OPS = {"all": None, "matmul": ["MatMul", "Gemm"]}  # None: onnxruntime's default set


def quantization_spec(quantize: str, ops: str) -> dict[str, Any] | None:
    """What the manifest records of the quantization (None: float32 networks)."""
    if quantize == "none":
        return None
    import onnxruntime

    return {"method": "dynamic", "weights": "int8", "activations": "uint8, per batch at run "
            "time", "ops": ops, "op_types": QUANTIZE_OPS[ops] or "onnxruntime's default",
            "per_channel": False, "tool": f"onnxruntime.quantization {onnxruntime.__version__}"}


def quantize_onnx(src: Path, dst: Path, ops: str) -> None:
    """Write ``src``'s network with int8 weights to ``dst`` (dynamic quantization)."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    # onnxruntime logs, on the root logger, a hint to pre-process (shape inference, graph
    # fusion) before quantizing; measured here it made the int8 network slower, not faster
    # (docs/export.md), so the hint is dropped, not followed
    hint = _DropHint()
    logging.getLogger().addFilter(hint)
    try:
        quantize_dynamic(Path(src), Path(dst), op_types_to_quantize=QUANTIZE_OPS[ops],
                         weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().removeFilter(hint)


class _DropHint:
    def filter(self, record) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing")
