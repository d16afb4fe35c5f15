"""``--auto-float``: when a PTQ INT8 export fails the parity gate, export it again with more
layers in float, rung by rung, until one passes or the rungs run out.

The rungs add to the user's ``--keep-float`` (measured on the real PReLU student, mean cosine
to FP32 on the held-back faces; ``quantize/reports/maskinv_mobilefacenet_tflite``):

1. the three layers the per-layer sensitivity report ranks worst (the gate's own suggestion;
   onnxruntime through the PReLU split with bias correction 0.99158 -> 0.99604, passes);
2. every depthwise convolution and the convolution feeding the last one (for MobileFaceNet
   ``conv_last.0``, whose output the float GDC head reads; LiteRT 0.970 -> 0.99670, passes).

A float depthwise layer costs little time (about 5% of MobileFaceNet's MACs), so the rungs
trade a little speed for the gate rather than give up the format. QAT is not retried: its
float layers are chosen before training.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from torch import nn

from edge.card import card_path

from quantize.context import ExportContext
from quantize.errors import ParityError
from quantize.exporter import ExportResult, run_export
from quantize.formats import Format
from quantize.student import DEPTHWISE, expand_layer_names

log = logging.getLogger(__name__)
WORST = 3  # layers of the sensitivity report the first rung keeps in float


def export_with_auto_float(ctx: ExportContext, fmt: Format, tag: str) -> ExportResult:
    """``run_export``, then, for a PTQ export that fails its parity gate, the rungs above.

    When a rung passes, the failed tries' sensitivity report gives way to ``<model>.auto-float.md``
    (every rung's float layers and parity, then the sensitivity table), and the card says which
    rung passed, so nothing beside a passing model reads as a failure.

    Raises:
        ParityError: the last rung failed too (its message says which layers were float).
    """
    try:
        return run_export(ctx, fmt, tag)
    except ParityError as err:
        if tag != "int8-ptq":
            raise
        tries = [(ctx.keep_float, err.parity)]
    base = ctx.keep_float
    try:
        for rung in float_rungs(ctx):
            ctx.keep_float = rung
            log.warning("%s %s: parity gate failed; --auto-float: again with %d layers float (%s)",
                        fmt.name, tag, len(rung), ",".join(rung))
            try:
                result = run_export(ctx, fmt, tag)
            except ParityError as err:
                last = err
                tries.append((rung, err.parity))
                continue
            return record_ladder(ctx, result, tries + [(rung, result.parity)])
        raise ParityError(f"{last} (--auto-float tried every rung; the last kept {len(rung)} "
                          "layers in float)", parity=last.parity, sensitivity=last.sensitivity)
    finally:
        ctx.keep_float = base


def record_ladder(ctx: ExportContext, result: ExportResult, tries: list) -> ExportResult:
    """Write ``<model>.auto-float.md``, drop the stale ``.sensitivity.md`` and note the rung in
    the card. ``tries``: (keep-float layers, parity) per export, the passing one last."""
    from quantize.sensitivity import render_sensitivity

    path = Path(result.path)
    ladder = path.with_name(path.name + ".auto-float.md")
    lines = [f"# --auto-float ladder of {path.name}", "",
             "Each row exported the model again with more layers in float; the last one passed the "
             "parity gate (cosine to PyTorch FP32 on the held-back faces).", "",
             "| try | layers float | mean cos | min cos | gate | float layers |", "|---|---|---|---|---|---|"]
    for k, (layers, parity) in enumerate(tries):
        verdict = "passed" if parity.passed else "failed"
        lines.append(f"| {k} | {len(layers)} | {parity.mean:.5f} | {parity.min:.5f} | {verdict} | "
                     f"{', '.join(layers) or '-'} |")
    ladder.write_text("\n".join(lines) + "\n\n" + render_sensitivity(ctx.sensitivity(), path.name))
    path.with_name(path.name + ".sensitivity.md").unlink(missing_ok=True)
    note = f"passed at try {len(tries) - 1} of the ladder in {ladder.name}"
    card = dataclasses.replace(result.card, provenance={**result.card.provenance, "auto_float": note})
    card.save(card_path(path))
    log.info("%s %s: --auto-float %s", result.format, result.tag, note)
    return dataclasses.replace(result, card=card)


def float_rungs(ctx: ExportContext) -> list[tuple[str, ...]]:
    """The ``--keep-float`` sets to try in order (each a superset of the one before)."""
    model = ctx.student.model
    worst = tuple(row.layer for row in ctx.sensitivity()[:WORST])
    first = tuple(dict.fromkeys(ctx.keep_float + worst))
    depthwise = expand_layer_names(model, (DEPTHWISE,))
    second = tuple(dict.fromkeys(first + depthwise + feeder_of_last(model, depthwise)))
    return [rung for k, rung in enumerate((first, second)) if k == 0 or rung != first]


def feeder_of_last(model: nn.Module, depthwise: tuple[str, ...]) -> tuple[str, ...]:
    """The convolution just before the last depthwise one in module order (MobileFaceNet:
    ``conv_last.0`` before the GDC head ``gdc.0``), or nothing."""
    if not depthwise:
        return ()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    at = convs.index(depthwise[-1])
    return (convs[at - 1],) if at > 0 and convs[at - 1] not in depthwise else ()
