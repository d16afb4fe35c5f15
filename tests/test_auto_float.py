"""--auto-float: the rungs it tries after a failed INT8 parity gate, and that it stops at the
first one that passes, restores the run's own --keep-float, and gives up with a clear error."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from torch import nn

import quantize.auto_float as auto
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
    rows = [SimpleNamespace(layer=name) for name in ("stem", "pw", "dw", "conv_last", "gdc")]
    return SimpleNamespace(student=SimpleNamespace(model=_net()), keep_float=tuple(keep),
                           sensitivity=lambda: rows)


def test_rungs_add_the_worst_layers_then_every_depthwise_and_its_feeder():
    rungs = auto.float_rungs(_ctx(keep=("conv_last",)))
    assert rungs == [("conv_last", "stem", "pw", "dw"),
                     ("conv_last", "stem", "pw", "dw", "gdc")]
    assert auto.float_rungs(_ctx())[1] == ("stem", "pw", "dw", "gdc", "conv_last")


def _fake_export(passes_with: int, seen: list):
    def run(ctx, fmt, tag):
        seen.append(ctx.keep_float)
        if len(ctx.keep_float) < passes_with:
            raise ParityError(f"failed with {len(ctx.keep_float)} float", parity="p", sensitivity="s")
        return ("passed", ctx.keep_float)
    return run


@pytest.mark.parametrize("passes_with, tries", [(0, 1), (3, 2), (5, 3)])
def test_stops_at_the_first_rung_that_passes_and_restores_keep_float(monkeypatch, passes_with, tries):
    seen = []
    monkeypatch.setattr(auto, "run_export", _fake_export(passes_with, seen))
    ctx = _ctx()
    result = auto.export_with_auto_float(ctx, FORMATS["tflite"], "int8-ptq")
    assert result[0] == "passed" and len(seen) == tries and len(result[1]) >= passes_with
    assert ctx.keep_float == ()


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
