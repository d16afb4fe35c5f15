"""--auto-float: the rungs it tries after a failed INT8 parity gate, and that it stops at the
first one that passes, restores the run's own --keep-float, leaves a ladder report and a card
note (no stale sensitivity report) beside the model that passed, and gives up with a clear
error."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from torch import nn

import quantize.auto_float as auto
from edge.card import ModelCard, card_path
from quantize.errors import ParityError
from quantize.formats import FORMATS


def _net() -> nn.Module:
    """stem -> depthwise -> pointwise -> head conv -> depthwise GDC, like MobileFaceNet."""
    net = nn.Module()
    net.stem = nn.Conv2d(3, 8, 3)
    net.dw = nn.Conv2d(8, 8, 3, groups=8)
    net.pw = nn.Conv2d(8, 16, 1)
    net.conv_last = nn.Conv2d(16, 32, 1)
    net.gdc = nn.Conv2d(32, 32, 7, groups=32)
    return net


def _ctx(keep=()):
    rows = [SimpleNamespace(layer=name, kind="conv", mean=0.99, min=0.98)
            for name in ("stem", "pw", "dw", "conv_last", "gdc")]
    return SimpleNamespace(student=SimpleNamespace(model=_net()), keep_float=tuple(keep),
                           sensitivity=lambda: rows)


def test_rungs_add_the_worst_layers_then_every_depthwise_and_its_feeder():
    rungs = auto.float_rungs(_ctx(keep=("conv_last",)))
    assert rungs == [("conv_last", "stem", "pw", "dw"),
                     ("conv_last", "stem", "pw", "dw", "gdc")]
    assert auto.float_rungs(_ctx())[1] == ("stem", "pw", "dw", "gdc", "conv_last")


def _fake_export(passes_with: int, seen: list, folder: Path | None = None):
    """run_export as the exporter does it: the model and its card in ``folder``; a failed gate
    leaves a sensitivity report there and raises."""
    def run(ctx, fmt, tag):
        seen.append(ctx.keep_float)
        path = (folder or Path("unused")) / f"m.{tag}.{fmt.suffix.lstrip('.')}"
        parity = SimpleNamespace(mean=0.99 + 0.001 * len(ctx.keep_float), min=0.98,
                                 passed=len(ctx.keep_float) >= passes_with)
        if not parity.passed:
            if folder:
                path.with_name(path.name + ".sensitivity.md").write_text("failed")
            raise ParityError(f"failed with {len(ctx.keep_float)} float", parity=parity, sensitivity="s")
        path.write_bytes(b"model")
        card = ModelCard(name="m", architecture="test", file=path.name, sha256="0" * 64,
                         format=fmt.name, precision="int8", embedding_size=8,
                         provenance={"keep_float": ",".join(ctx.keep_float)})
        card.save(card_path(path))
        return auto.ExportResult(fmt.name, tag, path, card, parity, 1.0)
    return run


@pytest.mark.parametrize("passes_with, tries", [(0, 1), (3, 2), (5, 3)])
def test_stops_at_the_first_rung_that_passes_and_restores_keep_float(monkeypatch, tmp_path,
                                                                      passes_with, tries):
    seen = []
    monkeypatch.setattr(auto, "run_export", _fake_export(passes_with, seen, tmp_path))
    ctx = _ctx()
    result = auto.export_with_auto_float(ctx, FORMATS["tflite"], "int8-ptq")
    assert result.parity.passed and len(seen) == tries and len(seen[-1]) >= passes_with
    assert ctx.keep_float == ()


def test_a_passing_rung_leaves_its_ladder_not_a_failure_report(monkeypatch, tmp_path):
    monkeypatch.setattr(auto, "run_export", _fake_export(5, [], tmp_path))
    result = auto.export_with_auto_float(_ctx(), FORMATS["onnx"], "int8-ptq")
    beside = sorted(p.name for p in tmp_path.iterdir())
    assert beside == ["m.int8-ptq.onnx", "m.int8-ptq.onnx.auto-float.md", "m.int8-ptq.onnx.card.json"]
    ladder = (tmp_path / "m.int8-ptq.onnx.auto-float.md").read_text()
    rows = [line for line in ladder.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [row.split(" | ")[4] for row in rows] == ["failed", "failed", "passed"]
    assert "| 2 | 5 | 0.99500 |" in rows[2] and "Per-layer INT8 sensitivity" in ladder
    saved = json.loads(card_path(result.path).read_text())["provenance"]
    assert saved["auto_float"] == "passed at try 2 of the ladder in m.int8-ptq.onnx.auto-float.md"
    assert result.card.provenance["auto_float"] == saved["auto_float"]


def test_a_first_time_pass_writes_no_ladder(monkeypatch, tmp_path):
    monkeypatch.setattr(auto, "run_export", _fake_export(0, [], tmp_path))
    result = auto.export_with_auto_float(_ctx(), FORMATS["onnx"], "int8-ptq")
    assert "auto_float" not in result.card.provenance
    assert not list(tmp_path.glob("*.auto-float.md"))


def test_gives_up_after_the_last_rung_with_what_it_tried(monkeypatch):
    seen = []
    monkeypatch.setattr(auto, "run_export", _fake_export(99, seen))
    ctx = _ctx(keep=("stem",))
    with pytest.raises(ParityError, match="tried every rung; the last kept 5 layers") as info:
        auto.export_with_auto_float(ctx, FORMATS["onnx"], "int8-ptq")
    assert len(seen) == 3 and info.value.sensitivity == "s" and ctx.keep_float == ("stem",)


def test_qat_and_fp32_failures_are_not_retried(monkeypatch):
    seen = []
    monkeypatch.setattr(auto, "run_export", _fake_export(99, seen))
    for tag in ("int8-qat", "fp32"):
        with pytest.raises(ParityError, match="failed with 0 float"):
            auto.export_with_auto_float(_ctx(), FORMATS["onnx"], tag)
    assert len(seen) == 2
