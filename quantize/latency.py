"""Is INT8 faster than FP32? Interleaved latency of carded models, and the activation study.

``measure_interleaved`` times ``Runtime.embed`` on one aligned face (batch 1, pre-processing
included: the same numpy code for every model) with the models of one comparison loaded side by
side and run in turns of a few calls, round after round (the order rotating), so that background
load on a shared machine hits FP32 and INT8 alike; medians and p90 of sorted samples.

``python -m quantize.latency`` runs the study behind ``quantize/reports/int8_latency.md``
(``--models RUN/best.pt ...`` runs it on trained students instead):
MobileFaceNet with PReLU (the paper's) against its ReLU twin, random weights (BatchNorm
statistics measured on real faces), FP32 vs INT8 PTQ on onnxruntime, OpenVINO and LiteRT at 1
and 2 threads; plus onnxruntime's u8 vs s8 activations, with the kernels its optimiser chose.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
REPORT = Path(__file__).resolve().parent / "reports" / "int8_latency.md"
ARCHS = ("mobilefacenet", "mobilefacenet_relu")
BLOCK = 20  # timed calls per model per turn: ~0.2 s, short against background-load swings
SETTLE = 5  # untimed calls opening each turn, while the other model's threads go idle


def measure_interleaved(paths: list[Path], threads: int, runs: int = 100, warmup: int = 10, *,
                        face: np.ndarray, block: int = BLOCK, settle: int = SETTLE) -> dict[str, dict]:
    """Median and p90 latency (ms) of each carded model, measured interleaved in blocks.

    The models take turns in blocks of ``block`` timed calls (the order rotating each round),
    each turn opening with ``settle`` untimed calls. Not call by call: after a run,
    onnxruntime's worker threads spin waiting for more work, and with two sessions alternating
    on 2 cores each one's spinning workers took a core from the other; measured on the real
    student at 2 threads, FP32 / INT8 18.1 / 16.7 ms call by call against 9.2 / 8.8 in blocks
    (9.0 / 8.6 with each model alone in its own session).

    ``face``: one real aligned face (HxWx3 uint8). Not a constant image: onnxruntime ran the
    student's FP32 graph 1.6x faster on a uniform grey face than on a real one (9.3 against
    14.5 ms, 1 thread; INT8 13.1 on both), which flattered FP32: its PRelu kernel branches on
    each element's sign, which a constant face makes predictable (``quantize.ort_prelu``).

    Returns:
        ``{str(path): {"median_ms", "p90_ms", "runs", "threads", "runtime"}}``.
    """
    from edge.runtimes import load_model

    nets = [load_model(p, threads=threads) for p in paths]
    face = face[None]
    for net in nets:
        for _ in range(warmup):
            net.embed(face)
    samples: list[list[float]] = [[] for _ in nets]
    for r in range(-(-runs // block)):
        for k in range(len(nets)):
            i = (k + r) % len(nets)  # rotate who goes first
            for _ in range(settle):
                nets[i].embed(face)
            for _ in range(min(block, runs - len(samples[i]))):
                start = time.perf_counter()
                nets[i].embed(face)
                samples[i].append((time.perf_counter() - start) * 1e3)
    out = {}
    for path, net, times in zip(paths, nets, samples):
        ordered = np.sort(times)
        out[str(path)] = {"median_ms": float(np.percentile(ordered, 50)),
                          "p90_ms": float(np.percentile(ordered, 90)), "runs": len(times),
                          "threads": threads, "runtime": type(net).name}
    return out


def ort_kernels(path: Path) -> dict[str, int]:
    """Op counts of the graph onnxruntime actually runs (after its optimiser's fusions)."""
    import onnx
    import onnxruntime as ort

    optimized = path.with_name(path.stem + ".ort-optimized.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(optimized)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts = Counter(n.op_type for n in onnx.load(str(optimized)).graph.node)
    optimized.unlink()
    keep = ("QLinearConv", "Conv", "FusedConv", "NhwcFusedConv", "QLinearAdd", "Add", "PRelu",
            "QuantizeLinear", "DequantizeLinear")
    return {k: counts[k] for k in keep if counts.get(k)}


def study(out_dir: Path, archs=ARCHS, threads=(1, 2), runs: int = 100, calib_size: int = 256) -> dict:
    """Export FP32 and INT8 of each arch in each format and time them (see module doc).

    ``archs``: registered names (random weights) or student checkpoints (``RUN/best.pt``: the
    real weights, so the INT8 cosine to FP32 is the trained model's).
    """
    from quantize.calibration import CalibrationConfig, load_calibration
    from quantize.context import ExportContext
    from quantize.exporter import run_export
    from quantize.exporters.onnx import quantize_onnx
    from quantize.formats import FORMATS
    from quantize.parity import ParityGate

    calib = load_calibration(CalibrationConfig(size=calib_size))
    face = calib.check_faces()[0]
    rows, kernels = [], {}
    for arch in archs:
        student = _student(arch, calib)
        arch = student.name
        # The INT8 parity is reported, not gated (latency is the question).
        ctx = ExportContext(student, calib, out_dir / arch,
                            gates={"fp32": ParityGate(min=0.9999), "int8": ParityGate(min=-1.0)})
        for fmt in FORMATS.values():
            fp32 = run_export(ctx, fmt, "fp32", thresholds=False)
            int8 = run_export(ctx, fmt, "int8-ptq", thresholds=False)
            pair = {"fp32": fp32.path, "int8": int8.path}
            if fmt.name == "onnx":
                pair["int8-s8s8"] = _s8s8_variant(ctx, int8.card, quantize_onnx)
                kernels[arch] = {k: ort_kernels(p) for k, p in pair.items()}
            for count in threads:
                timed = measure_interleaved(list(pair.values()), count, runs, face=face)
                row = {"arch": arch, "format": fmt.name, "runtime": fmt.runtime, "threads": count,
                       "int8_cosine": round(int8.parity.mean, 4)}
                row.update({f"{k}_ms": round(timed[str(p)]["median_ms"], 3) for k, p in pair.items()})
                row.update({f"{k}_p90_ms": round(timed[str(p)]["p90_ms"], 3) for k, p in pair.items()})
                rows.append(row)
                log.info("%s", row)
    return {"rows": rows, "ort_kernels": kernels, "runs": runs, "system": _system()}


def _student(arch: str, calib):
    from quantize.student import load_student, random_student

    if arch.endswith(".pt"):
        return load_student(arch)  # named after its run
    return random_student(arch, calib.calibration_faces(), name=arch)


def _s8s8_variant(ctx, card, quantize_onnx) -> Path:
    """The same ONNX INT8 export with s8 activations (same source graph: a PReLU student's
    split; PReLUs left float written branch-free, as in the u8 file), carded like the u8 one."""
    import dataclasses

    from edge.card import card_path, sha256_file
    from quantize.exporters.onnx import int8_source, write_for_onnxruntime

    source, exclude = int8_source(ctx)
    path = quantize_onnx(source, ctx.out_dir / f"{ctx.student.name}.int8-s8s8.onnx",
                         ctx.calibration_tensor(), activation="s8", exclude=exclude)
    write_for_onnxruntime(ctx, path, path, "int8-s8s8")
    dataclasses.replace(card, name=card.name + "-s8s8", file=path.name,
                        sha256=sha256_file(path)).save(card_path(path))
    return path


def render(result: dict) -> str:
    """The Markdown report of ``study``'s result."""
    rows = result["rows"]
    lines = ["# INT8 vs FP32 latency: MobileFaceNet PReLU vs ReLU", "",
             f"Batch 1, one aligned face, `Runtime.embed` (pre-processing included), median of "
             f"{result['runs']} interleaved runs per model (p90 in the JSON). Weights: random "
             "(BatchNorm statistics measured on real faces) for registered names, trained for "
             "checkpoints; latency does not depend on them, the INT8 cosine to FP32 (mean over "
             "the held-back calibration faces) does.", "",
             f"Machine: {result['system']}", "",
             "| model | runtime | threads | FP32 ms | INT8 ms | INT8 / FP32 | INT8 faster? | INT8 cos |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["int8_ms"] / r["fp32_ms"]
        lines.append(f"| {r['arch']} | {r['runtime']} | {r['threads']} | {r['fp32_ms']:.2f} | "
                     f"{r['int8_ms']:.2f} | {ratio:.2f} | {'yes' if ratio < 1 else '**no**'} | "
                     f"{r['int8_cosine']:.4f} |")
    lines += ["", "## Verdict", ""] + _verdict(rows)
    lines += ["", "## onnxruntime: u8 vs s8 activations (both 7-bit per-channel weights)", "",
              "| model | threads | u8s8 ms | s8s8 ms | FP32 ms |", "|---|---|---|---|---|"]
    for r in (r for r in rows if r["format"] == "onnx"):
        lines.append(f"| {r['arch']} | {r['threads']} | {r['int8_ms']:.2f} | {r['int8-s8s8_ms']:.2f} "
                     f"| {r['fp32_ms']:.2f} |")
    lines += ["", "Kernels onnxruntime runs after its graph optimiser:", ""]
    for arch, kinds in result["ort_kernels"].items():
        for kind, counts in kinds.items():
            lines.append(f"- {arch} {kind}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines) + "\n"


def _verdict(rows: list[dict]) -> list[str]:
    out = []
    for arch in dict.fromkeys(r["arch"] for r in rows):
        mine = [r for r in rows if r["arch"] == arch]
        losers = [f"{r['runtime']} {r['threads']}T" for r in mine if r["int8_ms"] >= r["fp32_ms"]]
        out.append(f"- {arch}: INT8 faster than FP32 everywhere" if not losers
                   else f"- {arch}: INT8 is **not** faster on {', '.join(losers)}")
    return out


def _system() -> str:
    from benchmarks.latency.system import system_info

    info = system_info()
    cpu = info.get("cpu", {})
    flags = ", ".join(k for k, v in cpu.get("flags", {}).items() if v) or "unknown"
    versions = ", ".join(f"{k} {v}" for k, v in info.get("packages", {}).items())
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    return (f"{cpu.get('model', 'unknown CPU')}, {cpu.get('logical_cores', '?')} logical cores "
            f"(flags: {flags}); {versions}; load average at the end {' '.join(load)}")


def main(argv: list[str] | None = None) -> int:
    """``python -m quantize.latency [--runs N] [--out DIR] [--report FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=Path("runs/quantize/latency"))
    parser.add_argument("--report", type=Path, default=REPORT)
    parser.add_argument("--models", nargs="+", default=list(ARCHS),
                        help="registered archs (random weights) or student checkpoints (.pt)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    write_study(args.report, study(args.out, archs=args.models, runs=args.runs), render)
    return 0


def write_study(report: Path, result: dict, render_fn) -> None:
    """Write a study's Markdown (``render_fn(result)``) and its JSON beside it; print the former."""
    report.write_text(render_fn(result))
    report.with_suffix(".json").write_text(json.dumps(result, indent=1))
    print(report.read_text())


if __name__ == "__main__":
    raise SystemExit(main())
