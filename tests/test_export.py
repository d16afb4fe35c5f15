"""Exporters: each format exports the tiny student, loads through edge/, holds its parity gate,
carries a card with thresholds; a wrong card is caught; INT8 failures name the layers.

Real faces from the data root (the calibration split is built once, then cached). The tiny
student has random weights with BatchNorm statistics measured on faces. Such a student cannot
reach the INT8 gate (cosine mean 0.995): with 8-channel layers it lands near 0.94 on every
runtime, so INT8 exports here are held to a sanity gate, and the real gate's failure path is
tested on its own (``test_int8_gate_failure_names_layers``).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from edge.card import ModelCard, card_path, sha256_file
from edge.errors import ConfigError
from edge.runtimes import load_model
from quantize.context import ExportContext
from quantize.errors import ParityError, QuantizeError
from quantize.exporter import run_export
from quantize.formats import FORMATS
from quantize.parity import GATES, ParityGate, check_parity
from quantize.student import random_student

SANITY_INT8 = ParityGate(min=0.5, mean=0.85)  # a broken export lands near 0

pytestmark = [pytest.mark.realdata, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def ctx(calibration, tmp_path_factory):
    student = random_student("mobilefacenet_tiny", calibration.calibration_faces(), name="tiny")
    return ExportContext(student, calibration, tmp_path_factory.mktemp("export"),
                         gates={"fp32": GATES["fp32"], "int8": SANITY_INT8})


@pytest.fixture(scope="module")
def exported(ctx):
    """``exported(fmt, tag)``: run_export once per (format, tag) in this module."""
    done = {}

    def get(fmt: str, tag: str):
        if (fmt, tag) not in done:
            done[fmt, tag] = run_export(ctx, FORMATS[fmt], tag)
        return done[fmt, tag]

    return get


class ExportTemplate:
    """One format's contract; subclasses name the format (NNCF's template-test pattern)."""

    fmt: str = ""

    @pytest.fixture()
    def fp32(self, exported):
        return exported(self.fmt, "fp32")

    @pytest.fixture()
    def int8(self, exported):
        return exported(self.fmt, "int8-ptq")

    def test_fp32_passes_gate_and_is_carded(self, fp32, ctx):
        card = ModelCard.load(card_path(fp32.path))
        assert fp32.parity.passed and fp32.parity.min >= 0.9999
        assert card.sha256 == sha256_file(fp32.path) and card.precision == "fp32"
        assert card.format == self.fmt and card.embedding_size == ctx.student.embedding_size
        assert card.input.layout == FORMATS[self.fmt].layout and card.input.color == "rgb"
        assert [t.far for t in card.thresholds] == [1e-2, 1e-3, 1e-4]
        assert card.thresholds[0].cosine <= card.thresholds[1].cosine <= card.thresholds[2].cosine
        assert card.accuracy["parity_vs_pytorch_fp32"]["passed"]

    def test_fp32_loads_through_edge(self, fp32, ctx):
        faces = ctx.calibration.check_faces()[:3]
        emb = load_model(fp32.path).embed(faces)
        assert emb.shape == (3, ctx.student.embedding_size)
        np.testing.assert_allclose(emb, ctx.student.embed(faces), atol=1e-3)

    def test_int8_exports_and_tracks_fp32(self, int8):
        # (No size check: the tiny student's Q/DQ bookkeeping outweighs its few weights.)
        card = ModelCard.load(card_path(int8.path))
        assert card.precision == "int8" and "PTQ" in card.provenance["export"]
        assert int8.parity.mean > SANITY_INT8.mean and card.thresholds
        assert load_model(int8.path).embed(np.zeros((2, 112, 112, 3), np.uint8)).shape[0] == 2


class TestOnnx(ExportTemplate):
    fmt = "onnx"

    def test_int8_weights_are_int8(self, int8):
        import onnx

        types = {t.data_type for t in onnx.load(str(int8.path)).graph.initializer}
        assert onnx.TensorProto.INT8 in types

    def test_prelu_left_float_in_int8_is_branch_free(self, int8):
        """The tiny student has PReLU and no split route: its PReLUs stay float between
        Q/DQ, and ship as Min/Mul/Add (``quantize.ort_prelu``)."""
        import onnx

        ops = {n.op_type for n in onnx.load(str(int8.path)).graph.node}
        assert "PRelu" not in ops and {"Min", "QuantizeLinear"} <= ops
        assert int8.card.provenance["export"].count("quantize.ort_prelu") == 1

    def test_batch_is_dynamic(self, fp32, ctx):
        assert ModelCard.load(card_path(fp32.path)).input.batch is None
        assert load_model(fp32.path).embed(ctx.calibration.check_faces()[:5]).shape[0] == 5


class TestOpenVino(ExportTemplate):
    fmt = "openvino"

    def test_weights_file_beside_xml(self, fp32):
        assert fp32.path.with_suffix(".bin").is_file()


class TestTflite(ExportTemplate):
    fmt = "tflite"

    def test_int8_is_full_integer(self, int8):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(int8.path))
        assert interpreter.get_input_details()[0]["dtype"] == np.int8


@pytest.fixture()
def onnx_fp32(exported):
    return exported("onnx", "fp32")


@pytest.mark.parametrize("change", [
    {"color": "bgr"},                                      # colour order swapped
    {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)},     # raw 0..255 pixels
    {"mean": (127.5, 127.5, 127.5), "std": (1.0, 1.0, 1.0)},
])
def test_wrong_card_fails_the_gate(onnx_fp32, ctx, change):
    wrong = dataclasses.replace(onnx_fp32.card, input=dataclasses.replace(onnx_fp32.card.input, **change))
    result = check_parity(onnx_fp32.path, ctx.student, ctx.calibration.check_faces(), "fp32", card=wrong)
    assert not result.passed and result.min < 0.9999


def _sibling(ctx, onnx_fp32, folder, **kwargs) -> ExportContext:
    """A context in another folder that reuses the FP32 ONNX already exported."""
    other = ExportContext(ctx.student, ctx.calibration, folder, **{"gates": ctx.gates, **kwargs})
    other.remember_onnx("fp32", ctx.fp32_onnx())
    return other


def test_wrapper_removes_card_of_wrong_export(ctx, onnx_fp32, tmp_path, monkeypatch):
    import quantize.exporter as exporter

    build = exporter.build_card

    def bgr_card(*args, **kwargs):
        card = build(*args, **kwargs)
        return dataclasses.replace(card, input=dataclasses.replace(card.input, color="bgr"))

    monkeypatch.setattr(exporter, "build_card", bgr_card)
    other = _sibling(ctx, onnx_fp32, tmp_path)
    with pytest.raises(ParityError, match="FP32 mismatch is a converter or card problem") as info:
        run_export(other, FORMATS["openvino"], "fp32")
    assert not info.value.parity.passed
    assert not card_path(other.artifact(FORMATS["openvino"], "fp32")).exists()


def test_int8_gate_failure_names_layers(ctx, onnx_fp32, tmp_path):
    strict = _sibling(ctx, onnx_fp32, tmp_path, gates=dict(GATES))  # the real INT8 gate
    with pytest.raises(ParityError, match=r"--keep-float \S+,\S+,\S+") as info:
        run_export(strict, FORMATS["onnx"], "int8-ptq")
    path = strict.artifact(FORMATS["onnx"], "int8-ptq")
    assert path.is_file() and not card_path(path).exists()
    report = path.with_name(path.name + ".sensitivity.md").read_text()
    assert "| stem.0.0 |" in report and info.value.sensitivity == report
    assert len(report.strip().splitlines()) == 4 + 10  # title, blank, header, rule, top 10


def test_keep_float_leaves_named_convs_float(ctx, onnx_fp32, tmp_path):
    import onnx

    keep = _sibling(ctx, onnx_fp32, tmp_path, keep_float=("stem.0.0", "stem.1.0"))
    result = run_export(keep, FORMATS["onnx"], "int8-ptq", thresholds=False)
    graph = onnx.load(str(result.path)).graph
    dq_outputs = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    convs = {n.input[1] if n.input[1] in dq_outputs else "float:" + n.input[1] for n in graph.node
             if n.op_type == "Conv"}
    assert {"float:stem.0.0.weight", "float:stem.1.0.weight"} <= convs
    assert result.card.provenance["keep_float"] == "stem.0.0,stem.1.0"


def test_keep_float_unknown_layer_lists_valid(ctx, onnx_fp32, tmp_path):
    bad = _sibling(ctx, onnx_fp32, tmp_path, keep_float=("nope",))
    with pytest.raises(QuantizeError, match="valid: .*stem.0.0"):
        run_export(bad, FORMATS["onnx"], "int8-ptq")


def test_retention_report(ctx, exported, tmp_path):
    """The report over carded files, on a small pack made of the calibration split's faces."""
    from benchmarks.packs import Pack
    from quantize.report import collect, evaluate_all, plot_rows, render

    exported("onnx", "fp32")
    exported("onnx", "int8-ptq")
    calib = ctx.calibration
    rng = np.random.default_rng(0)
    same = [(i, j) for i in range(len(calib)) for j in range(i + 1, len(calib)) if calib.ids[i] == calib.ids[j]]
    other = [tuple(rng.choice(len(calib), 2, replace=False)) for _ in range(4 * len(same))]
    other = [(i, j) for i, j in other if calib.ids[i] != calib.ids[j]][:len(same)]
    pairs = np.array(same + other)
    pack = Pack("calib-pack", "test", tmp_path, calib.keys, calib.unmasked, calib.masked, pairs[:, 0],
                pairs[:, 1], np.arange(len(pairs)) < len(same), np.arange(len(pairs)) % 10, calib.ids, {})
    models = [(p, c) for p, c in collect(ctx.out_dir) if c.format == "onnx"]
    rows = evaluate_all(models, pack, quick=False, runs=3, threads=(1,), rounds=3)
    tags = {r["tag"]: r for r in rows}
    assert set(tags) == {"fp32", "int8-ptq"} and tags["fp32"]["U-M_retention"] == 1.0
    assert 0 < tags["int8-ptq"]["U-U_acc"] <= 1 and tags["int8-ptq"]["latency_1t_ms"] > 0
    rounds = tags["int8-ptq"]["latency_1t_rounds_ms"]  # the reported figure is their median
    assert len(rounds) == 3 and tags["int8-ptq"]["latency_1t_ms"] == sorted(rounds)[1]
    markdown = render(rows, "calib-pack", False, plot_rows(rows, tmp_path / "r.png").name)
    assert "| onnx | int8-ptq |" in markdown and (tmp_path / "r.png").is_file()
    tables = [block.splitlines() for block in markdown.split("\n\n") if block.startswith("|")]
    assert len(tables) == 3  # retention, INT8 vs FP32 pair by pair, then against the noise floor
    for table in tables:
        assert len({line.count("|") for line in table}) == 1, table[:2]  # header, rule, rows agree
    paired = tags["int8-ptq"]["paired"]["U-M"]
    assert paired["pairs"] == len(pairs) and paired["ci95"][0] <= paired["difference"] <= paired["ci95"][1]
    assert "paired" not in tags["fp32"] and "| onnx | int8-ptq | " in tables[1][-1]
    floor = tags["int8-ptq"]["noise_floor"]
    assert set(floor) == {"U-U", "U-M", "M-M"} and floor["U-M"]["draws"] == 100
    assert floor["U-M"]["sd"] >= 0 and "noise_floor" not in tags["fp32"]
    assert "| onnx | int8-ptq | " in tables[2][-1] and " / " in tables[2][-1]
    assert "_embeddings" not in json.dumps([{k: v for k, v in r.items() if not k.startswith("_")}
                                             for r in rows])
    assert tags["int8-ptq"]["verdict"]["faster"] is None  # timed at one thread count only
    assert "- onnx int8-ptq: accuracy " in markdown and "verdict" not in tags["fp32"]


def _row(tag, acc, ms):
    return {"runtime": "onnx", "tag": tag, "name": f"m-{tag}", "path": f"m.{tag}.onnx",
            **{f"{s}_acc": a for s, a in zip(("U-U", "U-M", "M-M"), acc)},
            "latency_1t_ms": ms[0], "latency_2t_ms": ms[1]}


@pytest.mark.parametrize("int8_acc, int8_ms, kept, faster", [
    ((0.9870, 0.9610, 0.9620), (5.0, 3.0), True, True),     # -0.05 point at worst: within 0.1
    ((0.9880, 0.9550, 0.9630), (5.0, 3.0), False, True),    # U-M -0.6 point: the ORT split case
    ((0.9880, 0.9620, 0.9630), (5.0, 4.5), True, False),    # slower at 2 threads
])
def test_retention_gate_verdicts(int8_acc, int8_ms, kept, faster):
    from quantize.retention import add_verdicts, retention_failures

    rows = [_row("fp32", (0.9875, 0.9615, 0.9625), (7.0, 4.0)), _row("int8-ptq", int8_acc, int8_ms)]
    add_verdicts(rows)
    verdict = rows[1]["verdict"]
    assert (verdict["accuracy_kept"], verdict["faster"]) == (kept, faster)
    assert verdict["slower_at"] == ([] if faster else [2])
    failures = retention_failures(rows)
    assert len(failures) == (0 if kept else 1)
    if not kept:
        assert "U-M" in failures[0] and "0.65 point" in failures[0]


def test_speed_verdict_pairs_the_rounds():
    """Timed in rounds, INT8 and FP32 are compared round by round (both met the same load in a
    round): here INT8's quick round fell on FP32's slow one, so its median over the rounds looks
    faster (4.2 vs 12 ms) though it lost 4 of the 5 rounds; without rounds, the medians decide."""
    from quantize.report_render import render
    from quantize.retention import add_verdicts, fastest_kept, speed_ratio

    fp32 = _row("fp32", (0.9875, 0.9615, 0.9625), (12.0, 4.0))
    int8 = _row("int8-ptq", (0.9875, 0.9615, 0.9625), (4.2, 3.0))
    fp32["latency_1t_rounds_ms"] = [4.0, 4.0, 12.0, 12.0, 12.0]
    int8["latency_1t_rounds_ms"] = [4.2, 4.2, 4.2, 12.5, 12.5]
    speed = speed_ratio(int8, fp32, 1)
    assert speed == {"ratio": pytest.approx(12.5 / 12, abs=1e-4), "rounds": 5, "faster_rounds": 1,
                     "round_ratios": [1.05, 1.05, 0.35, 1.0417, 1.0417]}
    assert speed_ratio(int8, fp32, 2) == {"ratio": 0.75, "rounds": 1, "faster_rounds": 1,
                                          "round_ratios": [0.75]}
    rows = [fp32, int8]
    add_verdicts(rows)
    assert (int8["verdict"]["faster"], int8["verdict"]["slower_at"]) == (False, [1])
    assert fastest_kept(rows, 1, "onnx") is fp32 and fastest_kept(rows, 2, "onnx") is int8
    for row in rows:
        row.update(cosine=1.0, mb=1.0)
    text = render(rows, "test-pack", False, None)
    assert ("**not faster** than FP32 at 1 thread (4.20 vs 12.00 ms) (INT8 / FP32 within a round, "
            "median: 1.04 at 1 thread, faster in 1 of 5 rounds)") in text


@pytest.mark.parametrize("int8_acc, int8_ms, ship, best_1t", [
    ((0.9870, 0.9610, 0.9620), (5.0, 3.0), "- onnx: int8-ptq (5.00 / 3.00 ms at 1 / 2 threads)",
     ("onnx", "int8-ptq")),
    ((0.9880, 0.9550, 0.9630), (5.0, 3.0), "- onnx: fp32 (7.00 / 4.00 ms at 1 / 2 threads)",  # lost
     ("openvino", "fp32")),
    ((0.9880, 0.9620, 0.9630), (5.0, 4.5),
     "- onnx: int8-ptq at 1 thread (5.00 ms); fp32 at 2 threads (4.00 ms)", ("onnx", "int8-ptq")),
])
def test_what_to_ship_is_the_fastest_file_that_keeps_accuracy(int8_acc, int8_ms, ship, best_1t):
    """An INT8 that lost accuracy is never recommended, however fast; the pick is per thread count."""
    from quantize.report_render import render
    from quantize.retention import add_verdicts, fastest_kept

    rows = [_row("fp32", (0.9875, 0.9615, 0.9625), (7.0, 4.0)), _row("int8-ptq", int8_acc, int8_ms)]
    vino = _row("fp32", (0.9875, 0.9615, 0.9625), (6.0, 3.5)) | {"runtime": "openvino"}
    for row in (*rows, vino):
        row.update(cosine=1.0, mb=1.0)
    add_verdicts(rows)
    text = render([*rows, vino], "test-pack", False, None)
    assert ship in text
    assert fastest_kept([*rows, vino], 2, "openvino") is vino
    best = fastest_kept([*rows, vino], 1)
    assert (best["runtime"], best["tag"]) == best_1t


def _paired(diff):
    return {"difference": diff, "ci95": [diff - 0.002, diff + 0.002], "reference_only": 9,
            "candidate_only": 3, "p_value": 0.15}


def test_rerender_names_slow_threads_and_losses_beyond_noise(tmp_path):
    """From retention.json alone: the stale verdict is recomputed, the slow thread count is
    named with its timings, and a set beyond its noise floor is named though the gate passed."""
    from quantize.report import rerender

    int8 = _row("int8-ptq", (0.9865, 0.9615, 0.9625), (5.0, 4.5))  # U-U -0.10: within the gate
    int8["paired"] = {"U-U": _paired(-0.001), "U-M": _paired(0.0), "M-M": _paired(0.0)}
    floor = {"mean": 0.0004, "sd": 0.0007, "draws": 100}
    int8["noise_floor"] = {"U-U": floor | {"beyond": True}, "U-M": floor | {"beyond": False},
                           "M-M": floor | {"beyond": False}}
    int8["verdict"] = {"accuracy_kept": False, "worst_set": "M-M", "worst_diff": -0.5, "faster": True}
    rows = [_row("fp32", (0.9875, 0.9615, 0.9625), (7.0, 4.0)), int8]
    for row in rows:
        row.update(cosine=1.0, mb=1.0, pack="test-pack")
    (tmp_path / "retention.json").write_text(json.dumps(rows))
    markdown, png = rerender(tmp_path)
    text = markdown.read_text()
    assert text.startswith("# INT8 retention on test-pack") and png.is_file()
    assert ("- onnx int8-ptq: accuracy kept; **not faster** than FP32 at 2 threads (4.50 vs 4.00 ms); "
            "beyond its noise floor: U-U -0.10 (noise +0.04 +- 0.07)") in text
    assert json.loads((tmp_path / "retention.json").read_text())[1]["verdict"]["slower_at"] == [2]


def test_rerender_without_json_says_what_to_run(tmp_path):
    from quantize.report import rerender

    with pytest.raises(ConfigError, match="quantize.report"):
        rerender(tmp_path)


def test_keep_float_reaches_openvino(ctx, onnx_fp32, exported, tmp_path):
    """A kept layer's OpenVINO convolution reads float input and float weights; by default INT8."""
    import openvino as ov

    from quantize.exporters.onnx import conv_nodes

    node = conv_nodes(onnx_fp32.path, ("stem.0.0",))[0]

    def producers(path) -> tuple[str, str]:
        model = ov.Core().read_model(str(path))
        conv = next(op for op in model.get_ops() if op.get_friendly_name() in (node, f"{node}/WithoutBiases")
                    and op.get_type_name() in ("Convolution", "GroupConvolution"))
        return tuple(conv.input(i).get_source_output().get_node().get_type_name() for i in (0, 1))

    assert producers(exported("openvino", "int8-ptq").path)[0] == "FakeQuantize"
    keep = _sibling(ctx, onnx_fp32, tmp_path, keep_float=("stem.0.0",))
    result = run_export(keep, FORMATS["openvino"], "int8-ptq", thresholds=False)
    assert producers(result.path) == ("Parameter", "Constant")  # the input image, FP32 weights
    assert result.card.provenance["keep_float"] == "stem.0.0"
