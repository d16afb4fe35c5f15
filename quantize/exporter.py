"""The one export wrapper: run a format's exporter, time it, hold it to the parity gate, write
its card, log success or failure.

Every export, FP32 or INT8, goes through ``run_export``:

1. the format module writes the model file (``quantize.formats``);
2. a card is written beside it (input convention, sha256, provenance);
3. the file runs through ``edge`` with that card on held-back real faces and is compared with
   the PyTorch FP32 model (``quantize.parity``); on failure the card is removed (so no device
   loads the file), an INT8 failure gets a per-layer sensitivity report naming the layers to
   keep in float, and ``ParityError`` is raised;
4. the card gets FAR thresholds calibrated with the exported model on the calibration split.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from edge.card import ModelCard, card_path
from edge.errors import ConfigError, MaskEdgeError
from quantize.cards import build_card, calibrate_thresholds, with_thresholds
from quantize.context import ExportContext
from quantize.errors import ExportError, ParityError
from quantize.formats import Format
from quantize.parity import ParityResult, check_parity

log = logging.getLogger(__name__)
TAGS = {"fp32": "export_fp32", "int8-ptq": "export_int8", "int8-qat": "export_qat"}


@dataclass(frozen=True)
class ExportResult:
    """One exported, checked and carded model file."""

    format: str
    tag: str
    path: Path
    card: ModelCard
    parity: ParityResult
    seconds: float

    def to_dict(self) -> dict:
        return {"format": self.format, "tag": self.tag, "path": str(self.path),
                "card": str(card_path(self.path)), "seconds": round(self.seconds, 2),
                "parity": self.parity.to_dict(), "size_bytes": artifact_size(self.path)}


def run_export(ctx: ExportContext, fmt: Format, tag: str, thresholds: bool = True) -> ExportResult:
    """Export ``fmt`` at ``tag`` (``fp32``, ``int8-ptq``, ``int8-qat``), check it, card it.

    Args:
        ctx: the run (student, calibration split, output folder).
        fmt: a row of ``quantize.formats.FORMATS``.
        tag: what to export.
        thresholds: calibrate FAR thresholds into the card (off only for latency studies).

    Returns:
        The result (the file, its card, the parity figures, the export time).

    Raises:
        ConfigError: unknown tag, or INT8 asked of a format without INT8 support.
        ExportError: the converter failed.
        ParityError: the file disagrees with the PyTorch model (its card is removed).
    """
    if tag not in TAGS:
        raise ConfigError(f"unknown export {tag!r}; valid: {', '.join(TAGS)}")
    if tag != "fp32" and not fmt.int8:
        raise ConfigError(f"format {fmt.name} has no INT8 export; drop it from --formats for INT8")
    log.info("%s %s: exporting", fmt.name, tag)
    start = time.perf_counter()
    path = _export(ctx, fmt, tag)
    seconds = time.perf_counter() - start
    route = {"fp32": "FP32", "int8-ptq": f"PTQ, {fmt.int8_route}",
             "int8-qat": f"QAT (torchao PT2E, XNNPACK quantizer, 7-bit weights), {fmt.qat_route}"}[tag]
    if (fmt.name, tag) in ctx.route_notes:
        route += f", {ctx.route_notes[fmt.name, tag]}"
    card = build_card(ctx, fmt, tag, path, seconds, route)
    card.save(card_path(path))
    parity = _gate(ctx, path, card)
    if thresholds:
        from edge.runtimes import load_model

        net = load_model(path, card=card)
        card = with_thresholds(card, calibrate_thresholds(net.embed, ctx.calibration),
                               {"parity_vs_pytorch_fp32": parity.to_dict()})
    else:
        card = with_thresholds(card, (), {"parity_vs_pytorch_fp32": parity.to_dict()})
    card.save(card_path(path))
    log.info("%s %s: %s in %.1f s, %.2f MB; %s", fmt.name, tag, path.name, seconds,
             artifact_size(path) / 1e6, parity.summary())
    return ExportResult(fmt.name, tag, path, card, parity, seconds)


def _export(ctx: ExportContext, fmt: Format, tag: str) -> Path:
    try:
        return getattr(fmt.exporter(), TAGS[tag])(ctx)
    except MaskEdgeError:
        log.error("%s %s: export failed", fmt.name, tag)
        raise
    except Exception as err:  # converters raise many private types; keep the first line
        log.error("%s %s: export failed", fmt.name, tag)
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ExportError(f"{fmt.name} {tag} export failed ({type(err).__name__}: {first}); rerun "
                          "with --verbose for the converter's log, or drop this format") from err


def _gate(ctx: ExportContext, path: Path, card: ModelCard) -> ParityResult:
    precision = card.precision
    parity = check_parity(path, ctx.student, ctx.calibration.check_faces(), precision, card=card,
                          gate=ctx.gates[precision])
    if parity.passed:
        return parity
    card_path(path).unlink(missing_ok=True)
    message = (f"{path.name} failed the parity gate: {parity.summary()}. Its card was removed, so "
               "no device will load it.")
    report = None
    if precision == "int8":
        from quantize.sensitivity import render_sensitivity

        rows = ctx.sensitivity()
        report = render_sensitivity(rows, path.name)
        report_path = path.with_name(path.name + ".sensitivity.md")
        report_path.write_text(report)
        keep = ",".join(r.layer for r in rows[:3])
        other = ("train QAT longer (--steps) or with more faces (--calib)" if ".int8-qat." in path.name
                 else "rerun with --auto-float (it tries more float layers until one passes), or "
                      "use --method qat")
        message += (f" Fix: keep the most sensitive layers in float (--keep-float {keep}), or {other}. "
                    f"Per-layer sensitivity report: {report_path}")
    else:
        message += (" An FP32 mismatch is a converter or card problem (colour order, mean/std, "
                    "layout), not precision: check the card's input block against the training "
                    "convention")
    log.error("%s", message)
    raise ParityError(message, parity=parity, sensitivity=report)


def artifact_size(path: Path) -> int:
    """Bytes of a model file; OpenVINO IR counts its .xml graph and its .bin weights."""
    extra = path.with_suffix(".bin") if path.suffix == ".xml" else None
    return path.stat().st_size + (extra.stat().st_size if extra and extra.exists() else 0)
