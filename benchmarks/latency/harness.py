"""Bench one carded model on one runtime x threads x batch, timm ``benchmark.py`` style.

``bench_model`` loads the model (timed), runs warm-up calls, then a timed loop of
``Runtime._infer`` on a pre-processed random-face tensor (pre-processing is the same numpy
code on every runtime, so it is left out of the model latency; the pipeline bench times it
end to end). The loop runs at least ``iters`` calls and at least ``min_seconds``.
The result is a JSON-able record (``RESULT_SCHEMA_VERSION``) holding the model's card
identity, runtime version, effective threads, statistics and the system record.

Threads really apply: each backend passes them to its runtime's own option
(onnxruntime ``intra_op_num_threads``, OpenVINO ``INFERENCE_NUM_THREADS``, LiteRT
``num_threads``). The record reads them back where the runtime allows
(``threads_effective``) and stores the CPU time / wall time of the timed loop
(``cpu_per_wall``): about 1.0 for one thread, towards 2.0 for two busy threads.

``run_isolated`` runs one bench in a fresh interpreter (``python -m
benchmarks.latency.harness``), so peak RSS, load time and thread pools of one runtime do not
leak into the next. The parent adds the MAC count and the floor (``floor.attach_floor``).

Adding a runtime (e.g. TensorRT on a Jetson, a later step): register its ``Runtime``
subclass in ``edge.runtimes.BACKENDS`` (it reads ``self.threads`` like the others) and add a
branch to ``_effective_threads``/``runtime_version``; nothing else here changes.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency.stats import summarize
from benchmarks.latency.system import current_rss_mb, model_size_bytes, peak_rss_mb, system_info
from edge.errors import ConfigError, MaskEdgeError

log = logging.getLogger(__name__)

RESULT_SCHEMA = "maskedge.latency"
RESULT_SCHEMA_VERSION = 1
REPO = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai-edge-litert",
                    "tensorrt": "tensorrt"}


@dataclass(frozen=True)
class BenchConfig:
    """One measurement: a model (zoo name or carded file) on one runtime, threads and batch."""

    model: str
    runtime: str | None = None
    threads: int = 1
    batch: int = 1
    warmup: int = 10
    iters: int = 50
    min_seconds: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("threads", "batch", "iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0 or self.min_seconds < 0:
            raise ConfigError("warmup and min_seconds must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bench_model(config: BenchConfig) -> dict[str, Any]:
    """Measure ``config`` in this process and return the result record.

    Raises:
        MaskEdgeError subclasses from model resolution and loading (unknown model, missing
        runtime, bad card).
    """
    from edge.runtimes import load_model, runtime_for_suffix
    from edge.zoo import resolve_model

    path = resolve_model(config.model)
    runtime = config.runtime or runtime_for_suffix(path)
    rss_before = current_rss_mb()
    t0 = time.perf_counter()
    net = load_model(path, runtime=runtime, threads=config.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    h, w = net.card.input.size
    faces = np.random.default_rng(config.seed).integers(0, 256, (config.batch, h, w, 3), dtype=np.uint8)
    tensor = net.preprocess(faces)
    call = _infer_call(net, tensor)
    for _ in range(config.warmup):
        call()
    samples, cpu_per_wall = _timed_loop(call, config.iters, config.min_seconds)
    card = net.card
    return {
        "schema": RESULT_SCHEMA,
        "schema_version": RESULT_SCHEMA_VERSION,
        "kind": "model",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "model": {
            "name": card.name, "file": path.name, "format": card.format,
            "precision": card.precision, "card_sha256": card.sha256,
            "embedding_size": card.embedding_size, "input_size": list(card.input.size),
            "graph_batch": card.input.batch, "size_bytes": model_size_bytes(path),
            "macs": None, "macs_source": "not counted yet",
        },
        "runtime": {"name": runtime, "version": runtime_version(runtime), "class": type(net).__name__},
        "threads": config.threads,
        "threads_effective": _effective_threads(net),
        "batch": config.batch,
        "load_ms": load_ms,
        "rss_before_load_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_per_wall": cpu_per_wall,
        "loadavg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "stats": summarize(samples, config.batch).to_dict(),
        "floor": None,
        "system": system_info(),
    }


def _infer_call(net, tensor: np.ndarray):
    fixed = net.card.input.batch
    if fixed and len(tensor) != fixed:
        # Fixed-batch graphs (MobileFaceNet.tflite takes 2): time what embed() really runs.
        return lambda: [net._infer_padded(tensor[i : i + fixed], fixed) for i in range(0, len(tensor), fixed)]
    return lambda: net._infer(tensor)


def _timed_loop(call, iters: int, min_seconds: float) -> tuple[list[float], float]:
    samples: list[float] = []
    cpu0, start = time.process_time(), time.perf_counter()
    while len(samples) < iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        call()
        samples.append((time.perf_counter() - t0) * 1e3)
    wall = time.perf_counter() - start
    return samples, (time.process_time() - cpu0) / wall if wall > 0 else 0.0


def runtime_version(runtime: str) -> str | None:
    """Installed version of the package behind ``runtime`` (None if unknown)."""
    import importlib.metadata

    names = [RUNTIME_PACKAGES.get(runtime, runtime)] + (["tflite-runtime"] if runtime == "tflite" else [])
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _effective_threads(net) -> int | None:
    """Threads as the runtime reports them back; None where it has no getter (LiteRT)."""
    if hasattr(net, "session"):
        return int(net.session.get_session_options().intra_op_num_threads)
    if hasattr(net, "compiled"):
        return int(net.compiled.get_property("INFERENCE_NUM_THREADS"))
    return None


def run_isolated(config: BenchConfig, timeout: float = 600.0) -> dict[str, Any]:
    """Run ``bench_model(config)`` in a fresh Python process and return its record.

    Raises:
        MaskEdgeError: the child failed; the message carries its last error line.
    """
    with _temp_json() as out:
        cmd = [sys.executable, "-m", "benchmarks.latency.harness", json.dumps(config.to_dict()), str(out)]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not out.stat().st_size:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise MaskEdgeError(f"bench of {config.model} on {config.runtime} failed: {last}")
        return json.loads(out.read_text())


class _temp_json:
    def __enter__(self) -> Path:
        import tempfile

        handle, name = tempfile.mkstemp(suffix=".json", prefix="maskedge-bench-")
        os.close(handle)
        self.path = Path(name)
        return self.path

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _main(argv: list[str]) -> int:
    """Child entry point: ``python -m benchmarks.latency.harness '<config json>' out.json``."""
    logging.basicConfig(level=logging.WARNING)
    config = BenchConfig(**json.loads(argv[0]))
    try:
        record = bench_model(config)
    except MaskEdgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    Path(argv[1]).write_text(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
