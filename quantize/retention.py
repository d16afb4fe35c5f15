"""The retention gate: what an INT8 model may lose against the FP32 model of its runtime.

The kit's promise is INT8 losing at most ``RETENTION_GATE`` (0.1 point) of its runtime's FP32
accuracy on every set of masked LFW, and running faster. These functions add to the report's
rows (one dict per model file, ``quantize.report``): retention ratios, the pair-by-pair
comparison with its noise floor, and a verdict per INT8 row; ``retention_failures`` lists the
rows that break the promise.
"""

from __future__ import annotations

import statistics

SETS = ("U-U", "U-M", "M-M")
RETENTION_GATE = 0.001  # most accuracy (fraction) an INT8 model may lose against its FP32, per set


def fp32_row(row: dict, rows: list[dict]) -> dict | None:
    """The FP32 row of ``row``'s runtime (``row`` itself for an FP32 row), or None."""
    return next((r for r in rows if r["runtime"] == row["runtime"] and r["tag"] == "fp32"), None)


def add_retention(rows: list[dict]) -> None:
    """Each row's accuracy as a fraction of its runtime's FP32 accuracy, per set."""
    for row in rows:
        base = fp32_row(row, rows)
        for s in SETS:
            if base and row.get(f"{s}_acc") and base.get(f"{s}_acc"):
                row[f"{s}_retention"] = round(row[f"{s}_acc"] / base[f"{s}_acc"], 5)


def add_paired(rows: list[dict], pack) -> None:
    """Each INT8 row against its runtime's FP32 row on the same pairs, and the difference
    noise of the INT8 row's own size would make (``benchmarks.noise_floor``; full evaluation)."""
    from benchmarks.noise_floor import noise_floor
    from benchmarks.paired import compare_paired

    for row in rows:
        base = fp32_row(row, rows)
        if base is None or row is base:
            continue
        common = set(row["_scores"]) & set(base["_scores"])
        row["paired"] = {s: compare_paired(base["_scores"][s], row["_scores"][s], pack.is_same,
                                           pack.fold).to_dict() for s in SETS if s in common}
        if base.get("_embeddings") and row.get("_embeddings") and common:
            floors = noise_floor(base["_embeddings"], row["_embeddings"], pack, tuple(sorted(common)))
            row["noise_floor"] = {s: f.to_dict() | {"beyond": f.beyond(row["paired"][s]["difference"])}
                                  for s, f in floors.items()}


def add_verdicts(rows: list[dict]) -> None:
    """Each INT8 row: accuracy within ``RETENTION_GATE`` of FP32 on every set, faster at 1 and
    2 threads (``speed_ratio`` below 1; ``slower_at`` names the thread counts where it is not),
    and the sets whose loss is beyond what noise of its size costs (``beyond_floor``), gate or
    not."""
    for row in rows:
        base = fp32_row(row, rows)
        if base is None or row is base:
            continue
        diffs = {s: row[f"{s}_acc"] - base[f"{s}_acc"] for s in SETS
                 if row.get(f"{s}_acc") is not None and base.get(f"{s}_acc") is not None}
        if not diffs:
            continue
        worst = min(diffs, key=diffs.get)
        speed = {t: speed_ratio(row, base, t) for t in (1, 2)}
        timed = all(v is not None for v in speed.values())
        slower_at = [t for t, v in speed.items() if timed and v["ratio"] >= 1]
        beyond = [s for s, f in (row.get("noise_floor") or {}).items() if f.get("beyond")]
        row["verdict"] = {"accuracy_kept": diffs[worst] >= -RETENTION_GATE - 1e-9, "worst_set": worst,
                          "worst_diff": round(diffs[worst], 5), "faster": not slower_at if timed else None,
                          "slower_at": slower_at, "beyond_floor": beyond,
                          "speed": {str(t): v for t, v in speed.items() if v is not None}}


def speed_ratio(row: dict, base: dict, threads: int) -> dict | None:
    """INT8 / FP32 latency at ``threads`` (below 1: INT8 faster), None if either is untimed.

    Where both files were timed in the same rounds (``quantize.report`` times a runtime's files
    interleaved, round after round), the ratio is the median of the per-round ratios: within
    a round both files met the same background load, so a busy round moves both and cancels
    out, where two medians taken over all rounds need not. ``faster_rounds`` counts the rounds
    INT8 won; ``round_ratios`` are the rounds' ratios. Otherwise the ratio of the two latencies.
    """
    key = f"latency_{threads}t"
    if row.get(f"{key}_ms") is None or base.get(f"{key}_ms") is None:
        return None
    mine, theirs = row.get(f"{key}_rounds_ms") or [], base.get(f"{key}_rounds_ms") or []
    if len(mine) > 1 and len(mine) == len(theirs):
        ratios = [a / b for a, b in zip(mine, theirs)]
    else:
        ratios = [row[f"{key}_ms"] / base[f"{key}_ms"]]
    return {"ratio": round(statistics.median(ratios), 4), "rounds": len(ratios),
            "faster_rounds": sum(r < 1 for r in ratios), "round_ratios": [round(r, 4) for r in ratios]}


def retention_failures(rows: list[dict]) -> list[str]:
    """One line per INT8 model that lost more than ``RETENTION_GATE`` on some set."""
    return [f"{r['name']} ({r['path']}) loses {100 * -r['verdict']['worst_diff']:.2f} point on "
            f"{r['verdict']['worst_set']} against {r['runtime']} FP32 (gate {100 * RETENTION_GATE:.1f})"
            for r in rows if "verdict" in r and not r["verdict"]["accuracy_kept"]]


def fastest_kept(rows: list[dict], threads: int, runtime: str | None = None) -> dict | None:
    """The fastest model file at ``threads`` (of ``runtime``, or of any) among those that keep
    accuracy: an FP32 file, or an INT8 one whose verdict kept it within the gate and found it
    faster than its FP32 there (round by round, ``speed_ratio``). None when nothing was timed
    there. A file that loses accuracy is never the one to ship, however fast."""
    key = f"latency_{threads}t_ms"
    kept = [r for r in rows if r["runtime"] != "pytorch" and r.get(key) is not None
            and (runtime is None or r["runtime"] == runtime)
            and (r["tag"] == "fp32" or _kept_and_faster(r.get("verdict", {}), threads))]
    return min(kept, key=lambda r: r[key], default=None)


def _kept_and_faster(verdict: dict, threads: int) -> bool:
    return bool(verdict.get("accuracy_kept")) and threads not in verdict.get("slower_at", [threads])
