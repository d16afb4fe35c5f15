"""Latency harness: per-model benches, the hardware floor, the door pipeline and reports.

Public API:
    BenchConfig, bench_model, run_isolated      (harness)
    summarize, percentile, LatencyStats         (stats)
    system_info, peak_rss_mb                    (system)
    count_macs, calibrate, attach_floor         (floor)
    make_door_clip, bench_pipeline, bench_gallery (video, pipeline)
    RunResults, merge, write_report, render_markdown (results, report)

Modules import their runtimes lazily; importing this package needs numpy and OpenCV only.
"""

from benchmarks.latency.floor import attach_floor, calibrate, count_macs
from benchmarks.latency.harness import RESULT_SCHEMA_VERSION, BenchConfig, bench_model, run_isolated
from benchmarks.latency.pipeline import bench_gallery, bench_pipeline
from benchmarks.latency.report import render_markdown, write_report
from benchmarks.latency.results import RunResults, merge
from benchmarks.latency.stats import LatencyStats, percentile, summarize
from benchmarks.latency.system import peak_rss_mb, system_info
from benchmarks.latency.video import make_door_clip

__all__ = [
    "RESULT_SCHEMA_VERSION", "BenchConfig", "LatencyStats", "RunResults", "attach_floor",
    "bench_gallery", "bench_model", "bench_pipeline", "calibrate", "count_macs", "make_door_clip",
    "merge", "peak_rss_mb", "percentile", "render_markdown", "run_isolated", "summarize",
    "system_info", "write_report",
]
