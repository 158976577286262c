"""Tiny ONNX graphs built in code, for registry and serving tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_linear_onnx(path: Path, weight: float = 2.0, domain: str = "") -> Path:
    """y = x * weight for a float32 [N, 1] input; ``domain`` sets the Mul node's op domain."""
    node = helper.make_node("Mul", ["x", "w"], ["y"], domain=domain)
    graph = helper.make_graph(
        [node],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(np.array([weight], dtype=np.float32), name="w")],
    )
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    onnx.save(model, str(path))
    return path
