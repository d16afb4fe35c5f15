"""Calibration split, format table, checkpoints, thresholds, and the CLI's bad inputs (QAT: test_qat.py).

Tiny random student (BatchNorm statistics measured on real faces), real faces from the data root.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import typer

from cli.common import run_app
from cli.quantize import register
from edge.card import card_path
from edge.errors import ConfigError, ModelFileError
from quantize.calibration import CalibrationConfig, load_calibration
from quantize.cards import calibrate_thresholds
from quantize.errors import CalibrationError
from quantize.formats import FORMATS, get_format, parse_formats
from quantize.sensitivity import layer_sensitivity
from quantize.student import load_student, save_student

pytestmark = [pytest.mark.realdata, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory):
    return save_student(tiny.model, "mobilefacenet_tiny", tmp_path_factory.mktemp("run") / "last.pt")


# ---- calibration split -------------------------------------------------------------------
def test_calibration_split_is_real_held_out_faces(calibration, data_root):
    from benchmarks.datasets import open_lfw, unique_images

    _, pairs = open_lfw()
    lfw = {k.split(":", 1)[1] for k in calibration.keys if k.startswith("lfw-holdout:")}
    assert lfw and not lfw & set(unique_images(pairs))  # no evaluation image
    assert sum(k.startswith("utkface:") for k in calibration.keys) == len(calibration) - len(lfw)
    colour = calibration.check_faces().astype(int)
    assert (np.abs(colour[..., 0] - colour[..., 2]).mean(axis=(1, 2)) > 2).any()  # BGR != RGB here
    assert calibration.unmasked.shape == calibration.masked.shape == (len(calibration), 112, 112, 3)
    assert calibration.n_check == 8 and len(calibration.check_faces()) == 16  # 4 + 4 per source
    assert (calibration.masked != calibration.unmasked).any(axis=(1, 2, 3)).mean() > 0.9
    mixed = calibration.calibration_faces()
    assert np.array_equal(mixed[0], calibration.unmasked[0]) and np.array_equal(mixed[1], calibration.masked[1])
    assert len(set(calibration.ids)) < len(calibration)  # some people twice: genuine pairs exist


def test_empty_calibration_is_a_clear_error(tmp_path):
    with pytest.raises(CalibrationError, match="calibration set is empty"):
        CalibrationConfig(size=0)
    with pytest.raises(CalibrationError, match="calibration set is empty.*holds no image"):
        load_calibration(CalibrationConfig(source=str(tmp_path), size=16), progress=False)


def test_unknown_calibration_source():
    with pytest.raises(ConfigError, match="lfw-holdout, utkface"):
        CalibrationConfig(source="no-such-source")


# ---- formats ------------------------------------------------------------------------------
def test_format_table():
    assert {f.suffix for f in FORMATS.values()} == {".onnx", ".xml", ".tflite"}
    assert all(f.int8 and f.int8_route for f in FORMATS.values())
    assert [f.name for f in parse_formats("tflite, onnx,onnx")] == ["tflite", "onnx"]
    with pytest.raises(ConfigError, match="valid formats: onnx, openvino, tflite"):
        get_format("coreml")
    with pytest.raises(ConfigError, match="no export format"):
        parse_formats(" , ")


# ---- checkpoints --------------------------------------------------------------------------
def test_plain_checkpoint_round_trip(checkpoint, tiny):
    student = load_student(checkpoint)
    assert student.arch == "mobilefacenet_tiny" and student.embedding_size == 16
    assert student.name == checkpoint.parent.name and student.checkpoint_sha256
    faces = np.zeros((2, 112, 112, 3), np.uint8)
    np.testing.assert_allclose(student.embed(faces), tiny.embed(faces), atol=1e-6)


def test_distill_run_checkpoint(tiny, tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"model": tiny.model.state_dict(), "optimizer": {}, "epoch": 1,
                "config": {"name": "run7", "student": {"name": "mobilefacenet_tiny", "embedding_size": None}},
                "student": {"name": "mobilefacenet_tiny", "embedding_size": 16,
                            "input": {"color": "rgb", "mean": 127.5, "std": 128.0, "size": [112, 112]}}}, path)
    student = load_student(path)
    assert student.name == "run7" and student.input.std == (128.0, 128.0, 128.0)


def test_bad_checkpoints(tmp_path, tiny):
    with pytest.raises(ModelFileError, match="not found"):
        load_student(tmp_path / "missing.pt")
    torch.save({"model": tiny.model.state_dict()}, tmp_path / "noarch.pt")
    with pytest.raises(ModelFileError, match="does not say which architecture"):
        load_student(tmp_path / "noarch.pt")


# ---- thresholds and sensitivity -----------------------------------------------------------
def test_thresholds_from_calibration_split(tiny, calibration):
    thresholds = calibrate_thresholds(tiny.embed, calibration)
    assert [t.far for t in thresholds] == [1e-2, 1e-3, 1e-4]
    assert thresholds[0].cosine <= thresholds[1].cosine <= thresholds[2].cosine
    assert all(t.tar is not None and "calibration split" in t.data for t in thresholds)


def test_sensitivity_covers_every_conv(tiny, calibration):
    rows = layer_sensitivity(tiny, calibration)
    convs = [n for n, m in tiny.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(r.layer for r in rows) == sorted(convs)
    assert [r.mean for r in rows] == sorted(r.mean for r in rows) and rows[0].mean < 1.0


# ---- CLI ----------------------------------------------------------------------------------
def _cli(args: list[str]) -> int:
    app = typer.Typer()
    register(app)
    return run_app(app, args)


def test_cli_unknown_format_lists_valid(checkpoint, capsys):
    assert _cli(["export", "--checkpoint", str(checkpoint), "--formats", "onnx,coreml"]) == 2
    assert "valid formats: onnx, openvino, tflite" in capsys.readouterr().err


def test_cli_missing_checkpoint(tmp_path, capsys):
    assert _cli(["quantize", "--checkpoint", str(tmp_path / "last.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_empty_calibration(checkpoint, tmp_path, capsys):
    assert _cli(["export", "--checkpoint", str(checkpoint), "--calib", "0"]) == 2
    assert "calibration set is empty" in capsys.readouterr().err
    assert _cli(["quantize", "--checkpoint", str(checkpoint), "--calib-source", str(tmp_path)]) == 2
    assert "calibration set is empty" in capsys.readouterr().err


def test_cli_quantize_fails_on_the_int8_gate_with_a_report(checkpoint, tmp_path, capsys):
    # The tiny random student cannot reach the real INT8 gate: the command must say so, name
    # the layers to keep in float, and still leave the carded FP32 export.
    code = _cli(["quantize", "--checkpoint", str(checkpoint), "--formats", "onnx",
                 "--calib", "64", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "failed the parity gate" in err and "--keep-float" in err
    assert "| layer | kind | mean cos | min cos |" in err
    name = checkpoint.parent.name  # a run's last.pt is named after its folder
    assert card_path(tmp_path / f"{name}.fp32.onnx").is_file()
    assert not card_path(tmp_path / f"{name}.int8-ptq.onnx").exists()
    assert (tmp_path / "summary.json").is_file()


def test_cli_export_log_is_the_kits_not_the_converters(checkpoint, tmp_path):
    """A real process exporting TFLite: the kit's lines, none of litert-torch's progress tree,
    JAX lowering notes, absl C++ INFO or torch.export deprecations."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("LITERT_TORCH_SHOW_PROGRESS", "TF_CPP_MIN_LOG_LEVEL"):
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "main.py", "export", "--checkpoint", str(checkpoint),
                           "--formats", "tflite", "--calib", "16", "--out", str(tmp_path)],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-2000:]
    assert "INFO quantize.exporter: tflite fp32:" in log
    for chatter in ("[START]", "Use JAX lowering", "flatbuffer_export", "absl::InitializeLog",
                    "LeafSpec", "Failed to load", "libtpu"):
        assert chatter not in log, f"{chatter!r} in the export log:\n{log[-2000:]}"


def test_latency_study_takes_trained_checkpoints_and_reports_their_cosine(checkpoint, calibration):
    from quantize.latency import _student, render

    student = _student(str(checkpoint), calibration)
    assert student.checkpoint == checkpoint and student.arch == "mobilefacenet_tiny"
    row = {"arch": student.name, "format": "openvino", "runtime": "openvino", "threads": 1,
           "int8_cosine": 0.9931, "fp32_ms": 8.0, "int8_ms": 6.0}
    text = render({"rows": [row], "runs": 3, "system": "test", "ort_kernels": {}})
    assert "| 8.00 | 6.00 | 0.75 | yes | 0.9931 |" in text
    assert f"- {student.name}: INT8 faster than FP32 everywhere" in text


class _PadThenStride2(torch.nn.Module):
    """conv -> ReLU -> TF-'SAME' zero pad -> stride-2 depthwise conv, as in mobilefacenet_tf."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 1)
        self.pad = torch.nn.ZeroPad2d((0, 1, 0, 1))
        self.dw = torch.nn.Conv2d(8, 8, 3, 2, groups=8)

    def forward(self, x):
        return self.dw(self.pad(torch.relu(self.conv(x))))


def test_pt2e_zero_pad_shares_the_range_of_what_it_pads(tmp_path):
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from quantize.exporters.tflite import _lower_nhwc, _static_config
    from quantize.pt2e import xnnpack_quantizer

    model, x = _PadThenStride2().eval(), torch.rand(4, 3, 16, 16)
    batch = {0: torch.export.Dim("batch", min=1, max=64)}
    graph = torch.export.export(model, (x,), dynamic_shapes=(batch,)).module()
    prepared = prepare_pt2e(graph, xnnpack_quantizer())
    pad = next(n for n in prepared.graph.nodes if n.target == torch.ops.aten.pad.default)
    observer_in, observer_out = pad.args[0], next(iter(pad.users))
    assert getattr(prepared, observer_in.target) is getattr(prepared, observer_out.target)
    prepared(x)
    converted = allow_exported_model_train_eval(convert_pt2e(prepared, fold_quantize=False))
    path = _lower_nhwc(converted, x[:1], tmp_path / "pad.tflite", _static_config())
    from ai_edge_litert.interpreter import Interpreter

    ops = [op["op_name"] for op in Interpreter(model_path=str(path))._get_ops_details()]
    assert "QUANTIZE" not in ops, ops  # no requantization between the pad and the conv


def test_kernel_study_stacks_and_verdict():
    from quantize.kernels import conv_stack, render, stack_macs

    for kind in ("pointwise", "depthwise"):
        assert conv_stack(kind)(torch.zeros(2, 3, 112, 112)).shape == (2, 128)
    assert stack_macs("pointwise") == 8 * 28 * 28 * 128 * 128
    with pytest.raises(ValueError, match="valid: pointwise, depthwise"):
        conv_stack("dilated")
    row = {"kind": "pointwise", "threads": 1, "macs": 10**8}
    result = {"runs": 1, "system": "test", "rows": [
        dict(row, runtime="openvino", fp32_ms=2.0, int8_ms=1.0),
        dict(row, runtime="tflite", fp32_ms=2.0, int8_ms=2.2)]}
    text = render(result)
    assert "| pointwise | tflite | 1 | 2.000 | 2.200 | 1.10 | 50.0 | 45.5 |\n" in text
    assert "**not** faster than FP32 on tflite on" in text


def test_calibration_reader_serves_ranges_of_equal_batches():
    from quantize.exporters.onnx import CALIB_BATCH, _Reader, _stride

    tensor = np.arange(5 * CALIB_BATCH + 3, dtype=np.float32).reshape(-1, 1, 1, 1)
    reader = _Reader(tensor)
    assert len(reader) == 5  # the 3-face remainder is dropped: the percentile calibrator stacks batches
    reader.set_range(1, 3)
    first, second, end = reader.get_next(), reader.get_next(), reader.get_next()
    assert first["input"][0, 0, 0, 0] == CALIB_BATCH and second["input"].shape[0] == CALIB_BATCH
    assert end is None
    assert [_stride(n) for n in (28, 7, 6, 1)] == [4, 1, 3, 1]  # onnxruntime needs a divisor


def test_keep_float_depthwise_shorthand_names_every_depthwise_conv(tiny):
    from torch import nn

    from quantize.student import expand_layer_names

    names = expand_layer_names(tiny.model, ("stem.0.0", "depthwise", "depthwise", "nope"))
    modules = dict(tiny.model.named_modules())
    depthwise = [n for n, m in modules.items()
                 if isinstance(m, nn.Conv2d) and m.groups == m.in_channels > 1]
    assert len(depthwise) >= 2 and names == ("stem.0.0", *depthwise, "nope")
    assert all(modules[n].groups == modules[n].out_channels for n in depthwise)
    assert expand_layer_names(tiny.model, ()) == ()


def test_interleaved_latency_switches_models_in_blocks(monkeypatch):
    """Each model runs its turn alone (a block of calls, not one call each in alternation:
    onnxruntime's spinning workers of one session slowed the other 2x at 2 threads), the
    order rotates, and every model gets exactly ``runs`` timed calls."""
    import edge.runtimes
    from quantize.latency import measure_interleaved

    calls = []

    class Fake:
        name = "fake"

        def __init__(self, path):
            self.path = path

        def embed(self, face):
            calls.append(self.path)

    monkeypatch.setattr(edge.runtimes, "load_model", lambda path, threads: Fake(path))
    timed = measure_interleaved(["a", "b"], threads=2, runs=25, warmup=0, face=np.zeros((112, 112, 3), np.uint8),
                                block=10, settle=2)
    assert [timed[p]["runs"] for p in "ab"] == [25, 25]
    # Rounds a|b, b|a, a|b of 2 settling + 10 (last: 5) timed calls; turns that meet merge.
    turns = [(p, len(list(g))) for p, g in itertools.groupby(calls)]
    assert turns == [("a", 12), ("b", 24), ("a", 19), ("b", 7)]


def test_an_export_that_changes_the_student_stops_the_run(checkpoint, tmp_path, monkeypatch):
    """Every export and parity check after one that changed the student's weights would be
    wrong (the LiteRT bias correction once did, through tensors torch.export shares)."""
    import quantize.pipeline as pipeline
    from quantize.errors import QuantizeError

    def mutating_export(ctx, fmt, tag):
        with torch.no_grad():
            next(ctx.student.model.parameters()).add_(1e-3)
        raise QuantizeError("this export failed")

    monkeypatch.setattr(pipeline, "run_export", mutating_export)
    config = pipeline.RunConfig(checkpoint, "onnx", None, tmp_path, CalibrationConfig(size=64))
    with pytest.raises(QuantizeError, match="onnx fp32 export changed the student's weights"):
        pipeline.export_models(config, progress=False)


@pytest.mark.parametrize("formats, float_prelu_inputs", [("onnx,openvino", True), ("onnx,tflite", False)])
def test_qat_leaves_prelu_inputs_float_only_without_litert(checkpoint, tmp_path, monkeypatch, formats,
                                                           float_prelu_inputs):
    """LiteRT's full-integer lowering would run a conv with a float output as a float conv, so
    QAT keeps the quantizer before the PReLU whenever the model also goes to LiteRT."""
    import quantize.pipeline as pipeline
    import quantize.qat
    from quantize.errors import QuantizeError

    seen = {}

    def fake_qat(student, calibration, config, keep_float, progress, float_prelu_inputs):
        seen["float_prelu_inputs"] = float_prelu_inputs
        raise QuantizeError("stop after the choice")

    monkeypatch.setattr(quantize.qat, "run_qat", fake_qat)
    config = pipeline.RunConfig(checkpoint, formats, "qat", tmp_path, CalibrationConfig(size=64))
    with pytest.raises(QuantizeError, match="stop after the choice"):
        pipeline.quantize_models(config, progress=False)
    assert seen == {"float_prelu_inputs": float_prelu_inputs}
