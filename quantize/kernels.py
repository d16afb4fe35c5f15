"""Can INT8 beat FP32 on this CPU at all? FP32 vs INT8 throughput of plain convolution stacks.

A model's INT8-vs-FP32 ratio mixes two things: what the exporter made of the graph (fusions,
requantizations, layout transposes) and what the runtime's integer kernels can do on this CPU.
This study takes the graph out of the question: two stacks of the layers MobileFaceNet is made
of, nothing else (eight 1x1 convolutions 128 -> 128, or eight 3x3 depthwise convolutions, at
28x28, each followed by ReLU, which every runtime fuses), exported FP32 and INT8 through the
kit's exporter table and timed interleaved through ``edge`` (``quantize.latency``). Where INT8 is
no faster than FP32 on the pointwise stack, no graph rewrite can make a MobileFaceNet's INT8
faster on that runtime and CPU: the integer GEMM itself is not. (x86 without VNNI multiplies
int8 through 16-bit ``vpmaddwd`` or the saturating ``vpmaddubsw``; ARMv8.2 ``sdot`` and x86
VNNI are where INT8 kernels gain 2-4x.)

    python -m quantize.kernels [--runs 200] [--report quantize/reports/int8_kernels.md]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from torch import nn

log = logging.getLogger(__name__)
REPORT = Path(__file__).resolve().parent / "reports" / "int8_kernels.md"
CHANNELS, SIDE, DEPTH = 128, 28, 8
KINDS = ("pointwise", "depthwise")


def conv_stack(kind: str, channels: int = CHANNELS, depth: int = DEPTH) -> nn.Module:
    """112x112 face -> a stride-4 stem to ``SIDE``x``SIDE``x``channels`` -> ``depth`` convs of
    ``kind`` with ReLU -> global average (an embedding of ``channels``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; valid: {', '.join(KINDS)}")
    layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, 4), nn.ReLU()]
    for _ in range(depth):
        conv = (nn.Conv2d(channels, channels, 1) if kind == "pointwise"
                else nn.Conv2d(channels, channels, 3, 1, 1, groups=channels))
        layers += [conv, nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers).eval()


def stack_macs(kind: str, channels: int = CHANNELS, depth: int = DEPTH) -> int:
    """Multiply-accumulates of the ``depth`` stacked convolutions (the stem excluded)."""
    per_pixel = channels * channels if kind == "pointwise" else channels * 9
    return depth * SIDE * SIDE * per_pixel


def study(out_dir: Path, threads=(1, 2), runs: int = 200, calib_size: int = 128) -> dict:
    """Export each stack FP32 and INT8 in every format; time the pairs interleaved."""
    from quantize.calibration import CalibrationConfig, load_calibration
    from quantize.context import ExportContext
    from quantize.exporter import run_export
    from quantize.formats import FORMATS
    from quantize.latency import _system, measure_interleaved
    from quantize.parity import ParityGate
    from quantize.student import Student

    calib = load_calibration(CalibrationConfig(size=calib_size))
    face = calib.check_faces()[0]
    rows = []
    for kind in KINDS:
        student = Student(conv_stack(kind), arch=f"conv-stack-{kind}", embedding_size=CHANNELS,
                          name=f"{kind}_stack")
        # Latency is the question: parity is not gated (a ReLU stack's pooled output has cosine
        # ~1 to anything positive, so it would not say much either).
        ctx = ExportContext(student, calib, out_dir / kind,
                            gates={"fp32": ParityGate(min=0.9999), "int8": ParityGate(min=-1.0)})
        for fmt in FORMATS.values():
            fp32 = run_export(ctx, fmt, "fp32", thresholds=False)
            int8 = run_export(ctx, fmt, "int8-ptq", thresholds=False)
            for count in threads:
                timed = measure_interleaved([fp32.path, int8.path], count, runs, face=face)
                row = {"kind": kind, "runtime": fmt.runtime, "threads": count,
                       "macs": stack_macs(kind),
                       "fp32_ms": round(timed[str(fp32.path)]["median_ms"], 3),
                       "int8_ms": round(timed[str(int8.path)]["median_ms"], 3)}
                rows.append(row)
                log.info("%s", row)
    return {"rows": rows, "runs": runs, "system": _system()}


def render(result: dict) -> str:
    """The Markdown report of ``study``'s result."""
    lines = ["# Can INT8 beat FP32 here? Plain convolution stacks", "",
             f"{DEPTH} convolutions ({CHANNELS} channels, {SIDE}x{SIDE}, ReLU) after a small "
             "stem, batch 1 through `edge` (pre-processing included), median of "
             f"{result['runs']} interleaved runs. GMAC/s counts the stacked convolutions only.", "",
             f"Machine: {result['system']}", "",
             "| stack | runtime | threads | FP32 ms | INT8 ms | INT8 / FP32 | FP32 GMAC/s | "
             "INT8 GMAC/s |", "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['kind']} | {r['runtime']} | {r['threads']} | {r['fp32_ms']:.3f} | "
                     f"{r['int8_ms']:.3f} | {r['int8_ms'] / r['fp32_ms']:.2f} | "
                     f"{r['macs'] / r['fp32_ms'] / 1e6:.1f} | {r['macs'] / r['int8_ms'] / 1e6:.1f} |")
    slow = sorted({r["runtime"] for r in result["rows"]
                   if r["kind"] == "pointwise" and r["int8_ms"] >= r["fp32_ms"]})
    lines += ["", "## Verdict", "",
              ("INT8 pointwise convolutions are faster than FP32 on every runtime here."
               if not slow else
               f"INT8 pointwise convolutions are **not** faster than FP32 on {', '.join(slow)} on "
               "this CPU: their integer kernels, not the exported graph, set the limit.")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m quantize.kernels [--runs N] [--out DIR] [--report FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("runs/quantize/kernels"))
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from quantize.latency import write_study

    write_study(args.report, study(args.out, runs=args.runs), render)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
