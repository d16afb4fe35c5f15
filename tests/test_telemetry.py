"""OpenVINO's telemetry stays off: importing OpenVINO and converting a model fork nothing.

OpenVINO sends usage events from a thread that forks a child; after torch or JAX are loaded
such a fork can deadlock (it hung CI for 90 minutes), and a face kit must not phone home.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")

SCRIPT = textwrap.dedent("""
    import os, sys, time
    forks = []
    real_fork = os.fork
    os.fork = lambda: forks.append(1) or real_fork()
    from edge.telemetry import import_openvino
    ov = import_openvino()
    model = ov.convert_model(sys.argv[1])
    import nncf  # NNCF's own telemetry is stubbed by the same opt-out
    time.sleep(1.0)  # events go out from a worker thread: give it time
    print("forks", len(forks), "nncf-stub", type(nncf.telemetry.wrapper.telemetry).__name__)
""")


def _tiny_onnx(path):
    from onnx import TensorProto, helper

    node = helper.make_node("Relu", ["x"], ["y"])
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([node], "tiny", [x],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_openvino_import_and_convert_send_nothing(tmp_path):
    model = tmp_path / "tiny.onnx"
    _tiny_onnx(model)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "NNCF_CI")}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(model)], capture_output=True, text=True,
                         timeout=120, env=env, cwd=str(Path(__file__).parents[1]))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "forks 0 " in out.stdout, out.stdout
    assert "nncf-stub NNCFTelemetry\n" not in out.stdout, out.stdout  # the real sender
