"""The retention report's Markdown and plot, from the rows ``quantize.report`` evaluates.

Markdown: accuracies side by side per runtime, the pair-by-pair differences, the noise floor
and a verdict per INT8 model. Plot: INT8 minus FP32 per set with the gate's line (or the
accuracies, when no pair-by-pair comparison was made) and the 1-thread latencies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from quantize.retention import RETENTION_GATE, SETS, fastest_kept, fp32_row, speed_ratio

THREADS = (1, 2)

log = logging.getLogger(__name__)


def render(rows: list[dict], pack_name: str, quick: bool, plot: str | None) -> str:
    """The Markdown table (FP32 and INT8 side by side per runtime)."""
    lines = [f"# INT8 retention on {pack_name}{' (quick: folds 1-2)' if quick else ''}", "",
             "Accuracy: LFW 10-fold protocol; TAR at FAR 1e-3 against all cross-identity pairs; "
             "retention = INT8 / FP32 accuracy of the same runtime; cosine: to PyTorch FP32 on "
             "held-back calibration faces; latency: batch 1, each format's files timed interleaved, "
             "median over rounds of such timings (each round's in the JSON); faster or not: INT8 / "
             "FP32 within each round, median over the rounds.", "",
             "| runtime | model | " + " | ".join(f"{s} acc" for s in SETS) + " | U-M TAR@1e-3 | "
             "U-M retention | cos to FP32 | MB | 1T ms | 2T ms |",
             "|---|---|" + "---|" * (len(SETS) + 6)]
    for r in rows:
        accs = " | ".join(_pct(r.get(f"{s}_acc")) for s in SETS)
        lines.append(f"| {r['runtime']} | {r['tag']} | {accs} | {_pct(r.get('U-M_tar'))} | "
                     f"{_pct(r.get('U-M_retention'))} | {_num(r['cosine'], 5)} | {_num(r['mb'], 2)} | "
                     f"{_num(r.get('latency_1t_ms'), 2)} | {_num(r.get('latency_2t_ms'), 2)} |")
    lines += _paired_table(rows) + _noise_table(rows) + _verdict_lines(rows) + _ship_lines(rows)
    if plot:
        lines += ["", f"![retention]({plot})"]
    return "\n".join(lines) + "\n"


def _paired_table(rows: list[dict]) -> list[str]:
    paired = [r for r in rows if r.get("paired")]
    if not paired:
        return []
    lines = ["", "INT8 against FP32 of the same runtime, pair by pair (`benchmarks.paired`): accuracy "
             "difference in points with its 95% interval, pairs lost / gained (decided right by "
             "FP32 only / by INT8 only), McNemar's exact p. A 0.1-point change is 6 of 6,000 pairs.",
             "", "| runtime | model | " + " | ".join(f"{s} diff [95% CI]" for s in SETS)
             + " | " + " | ".join(f"{s} lost/gained, p" for s in SETS) + " |",
             "|---|---|" + "---|" * (2 * len(SETS))]
    for r in paired:
        p = r["paired"]
        diffs = " | ".join(_diff(p.get(s)) for s in SETS)
        flips = " | ".join(_flips(p.get(s)) for s in SETS)
        lines.append(f"| {r['runtime']} | {r['tag']} | {diffs} | {flips} |")
    return lines


def _noise_table(rows: list[dict]) -> list[str]:
    from benchmarks.noise_floor import DRAWS

    floored = [r for r in rows if r.get("noise_floor")]
    if not floored:
        return []
    lines = ["", "What noise of each INT8 model's own size costs (`benchmarks.noise_floor`: its error "
             f"vectors given to other faces, {DRAWS} draws): measured difference against the noise "
             "floor's mean +- sd, in points. **beyond** marks a loss more than 2 sd below it: "
             "INT8 losing more than its noise explains.", "",
             "| runtime | model | " + " | ".join(f"{s} measured / noise" for s in SETS) + " |",
             "|---|---|" + "---|" * len(SETS)]
    for r in floored:
        cells = " | ".join(_floor(r["paired"].get(s), r["noise_floor"].get(s)) for s in SETS)
        lines.append(f"| {r['runtime']} | {r['tag']} | {cells} |")
    return lines


def _floor(p: dict | None, f: dict | None) -> str:
    if not p or not f:
        return "-"
    mark = " **beyond**" if f["beyond"] else ""
    return f"{100 * p['difference']:+.2f} / {100 * f['mean']:+.2f} +- {100 * f['sd']:.2f}{mark}"


def _diff(p: dict | None) -> str:
    if not p:
        return "-"
    low, high = p["ci95"]
    return f"{100 * p['difference']:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]"


def _flips(p: dict | None) -> str:
    return "-" if not p else f"{p['reference_only']}/{p['candidate_only']}, {p['p_value']:.2f}"


def _verdict_lines(rows: list[dict]) -> list[str]:
    judged = [r for r in rows if "verdict" in r]
    if not judged:
        return []
    lines = ["", f"Verdict (the kit's promise: INT8 faster than FP32 and within "
                 f"{100 * RETENTION_GATE:.1f} point of its accuracy on every set):", ""]
    for r in judged:
        v = r["verdict"]
        kept = "kept" if v["accuracy_kept"] else f"**LOST** (worst: {v['worst_set']} {100 * v['worst_diff']:+.2f})"
        lines.append(f"- {r['runtime']} {r['tag']}: accuracy {kept}{_noise_note(r)}; "
                     f"{_speed_note(r, rows)}{_beyond_note(r)}")
    return lines


def _ship_lines(rows: list[dict]) -> list[str]:
    """Per runtime, the file to put on a device like the one that timed them: the fastest that
    keeps accuracy, which is the FP32 file where INT8 is slower here or lost accuracy."""
    runtimes = list(dict.fromkeys(r["runtime"] for r in rows if r["runtime"] != "pytorch"))
    picks = {rt: {t: fastest_kept(rows, t, rt) for t in (1, 2)} for rt in runtimes}
    if not any(p for pick in picks.values() for p in pick.values()):
        return []
    lines = ["", "What to ship on a device like this one (per runtime, the fastest file that keeps "
                 "accuracy: FP32, or an INT8 that kept it within the gate):", ""]
    for rt, pick in picks.items():
        lines.append(f"- {rt}: {_pick_text(pick)}")
    overall = {t: fastest_kept(rows, t) for t in (1, 2)}
    if any(overall.values()):
        lines.append(f"- fastest of all: {_pick_text(overall, with_runtime=True)}")
    return lines


def _pick_text(pick: dict, with_runtime: bool = False) -> str:
    def name(row: dict) -> str:
        return f"{row['runtime']} {row['tag']}" if with_runtime else row["tag"]

    timed = {t: r for t, r in pick.items() if r is not None}
    if not timed:
        return "not timed"
    if len({name(r) for r in timed.values()}) == 1:
        row = next(iter(timed.values()))
        times = " / ".join(f"{row[f'latency_{t}t_ms']:.2f}" for t in timed)
        return f"{name(row)} ({times} ms at {' / '.join(map(str, timed))} thread{'s' * (len(timed) > 1)})"
    return "; ".join(f"{name(r)} at {t} thread{'s' * (t > 1)} ({r[f'latency_{t}t_ms']:.2f} ms)"
                     for t, r in timed.items())


def _speed_note(row: dict, rows: list[dict]) -> str:
    slower_at = row["verdict"].get("slower_at", [])
    if row["verdict"]["faster"] is None:
        return "not timed at both 1 and 2 threads"
    if not slower_at:
        return f"faster than FP32 at 1 and 2 threads{_rounds_note(row, (1, 2))}"
    base = fp32_row(row, rows)
    times = ", ".join(f"{t} thread{'s' * (t > 1)} ({row[f'latency_{t}t_ms']:.2f} vs "
                      f"{base[f'latency_{t}t_ms']:.2f} ms)" for t in slower_at)
    return f"**not faster** than FP32 at {times}{_rounds_note(row, slower_at)}"


def _rounds_note(row: dict, threads) -> str:
    """The paired per-round figures behind a speed verdict, where there were rounds."""
    speed = {t: row["verdict"].get("speed", {}).get(str(t)) for t in threads}
    if not all(v and v["rounds"] > 1 for v in speed.values()):
        return ""
    parts = [f"{v['ratio']:.2f} at {t} thread{'s' * (t > 1)}, faster in {v['faster_rounds']} of "
             f"{v['rounds']} rounds" for t, v in speed.items()]
    return f" (INT8 / FP32 within a round, median: {'; '.join(parts)})"


def _noise_note(row: dict) -> str:
    """For a lost set: is the loss what noise of the model's size costs, or more?"""
    floor = (row.get("noise_floor") or {}).get(row["verdict"]["worst_set"])
    if row["verdict"]["accuracy_kept"] or not floor:
        return ""
    where = "beyond" if floor["beyond"] else "within"
    return (f", {where} what noise of its size costs ({100 * floor['mean']:+.2f} +- "
            f"{100 * floor['sd']:.2f})")


def _beyond_note(row: dict) -> str:
    """Sets whose loss is beyond the noise floor though the gate (or the worst set) passed them."""
    v = row["verdict"]
    named = [s for s in v.get("beyond_floor", []) if v["accuracy_kept"] or s != v["worst_set"]]
    if not named:
        return ""
    parts = [f"{s} {100 * row['paired'][s]['difference']:+.2f} (noise {100 * row['noise_floor'][s]['mean']:+.2f}"
             f" +- {100 * row['noise_floor'][s]['sd']:.2f})" for s in named]
    return "; beyond its noise floor: " + ", ".join(parts)


def plot_rows(rows: list[dict], path: Path) -> Path | None:
    """Left: what INT8 changes, per set, pair by pair (difference and 95% interval, with the
    retention gate's line); without paired rows, the accuracies. Right: INT8 / FP32 latency of
    the same runtime, round by round, at 1 and 2 threads; without INT8 rows, 1-thread latency."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib missing: retention plot skipped (pip install matplotlib)")
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9, 1.5 * len(rows)), 4.5))
    paired = [r for r in rows if r.get("paired")]
    if paired:
        _plot_differences(left, paired)
    else:
        _plot_accuracies(left, rows)
    if not _plot_speed(right, rows):
        _plot_latency(right, rows)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot_speed(axis, rows: list[dict]) -> bool:
    """Bars: the median over rounds of INT8 / FP32 latency (the verdict's figure); dots: each
    round's ratio. Absolute milliseconds on a shared machine move with its load from round to
    round; within a round both files met the same load. False when no INT8 row was timed."""
    int8 = [r for r in rows if r["tag"] != "fp32" and fp32_row(r, rows)]
    speeds = [[speed_ratio(r, fp32_row(r, rows), t) for t in THREADS] for r in int8]
    if not any(s for pair in speeds for s in pair):
        return False
    width = 0.8 / len(THREADS)
    for k, threads in enumerate(THREADS):
        x = np.arange(len(int8)) + (k - (len(THREADS) - 1) / 2) * width
        medians = [pair[k]["ratio"] if pair[k] else np.nan for pair in speeds]
        axis.bar(x, medians, width, label=f"{threads} thread{'s' if threads > 1 else ''}", alpha=0.7)
        for xi, pair in zip(x, speeds):
            rounds = pair[k]["round_ratios"] if pair[k] else []
            axis.plot([xi] * len(rounds), rounds, ".", color="black", markersize=3)
    axis.axhline(1, color="tab:red", linestyle="--", linewidth=1, label="FP32 (slower above)")
    axis.set_xticks(np.arange(len(int8)), [f"{r['runtime']}\n{r['tag']}" for r in int8], fontsize=7)
    axis.set_ylabel("INT8 / FP32 latency (bar: median, dots: rounds)")
    axis.legend(fontsize=7)
    return True


def _plot_latency(axis, rows: list[dict]) -> None:
    axis.bar(np.arange(len(rows)), [r.get("latency_1t_ms") or 0 for r in rows],
             color=["tab:gray" if r["tag"] == "fp32" else "tab:blue" for r in rows])
    axis.set_xticks(np.arange(len(rows)), [f"{r['runtime']}\n{r['tag']}" for r in rows], fontsize=7)
    axis.set_ylabel("batch-1 latency, 1 thread (ms)")


def _plot_differences(axis, paired: list[dict]) -> None:
    width = 0.8 / len(SETS)
    for k, name in enumerate(SETS):
        found = [r["paired"].get(name) for r in paired]
        x = np.arange(len(paired)) + (k - 1) * width
        diff = np.array([100 * p["difference"] if p else np.nan for p in found])
        low = np.array([100 * (p["difference"] - p["ci95"][0]) if p else 0 for p in found])
        high = np.array([100 * (p["ci95"][1] - p["difference"]) if p else 0 for p in found])
        axis.errorbar(x, diff, yerr=[low, high], fmt="o", capsize=3, label=name)
        floors = [(r.get("noise_floor") or {}).get(name) for r in paired]
        if any(floors):
            mean = np.array([100 * f["mean"] if f else np.nan for f in floors])
            sd = np.array([100 * f["sd"] if f else 0 for f in floors])
            axis.errorbar(x + width / 3, mean, yerr=sd, fmt="x", color="tab:gray", capsize=2,
                          label="noise of its size (mean +- sd)" if k == 0 else None)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.axhline(-100 * RETENTION_GATE, color="tab:red", linestyle="--", linewidth=1,
                 label=f"-{100 * RETENTION_GATE:.1f} point (gate)")
    axis.set_xticks(np.arange(len(paired)), [f"{r['runtime']}\n{r['tag']}" for r in paired], fontsize=7)
    axis.set_ylabel("INT8 - FP32 accuracy (points, 95% CI)")
    axis.legend(fontsize=7)


def _plot_accuracies(axis, rows: list[dict]) -> None:
    width = 0.8 / len(SETS)
    for k, name in enumerate(SETS):
        values = [100 * (r.get(f"{name}_acc") or 0) for r in rows]
        axis.bar(np.arange(len(rows)) + k * width, values, width, label=name)
    axis.set_xticks(np.arange(len(rows)) + width, [f"{r['runtime']}\n{r['tag']}" for r in rows], fontsize=7)
    axis.set_ylabel("10-fold accuracy (%)")
    axis.set_ylim(50, 100)
    axis.legend()


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _num(value, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
