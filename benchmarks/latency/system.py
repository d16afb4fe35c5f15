"""What a latency number was measured on: CPU, flags, OS, Python, runtime versions, memory.

Versions are read from package metadata (``importlib.metadata``), so torch is never imported
just to print its version; torch is only listed if it is installed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# distribution name -> key in the system record
PACKAGES = {
    "numpy": "numpy",
    "opencv-python-headless": "opencv",
    "opencv-python": "opencv",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "openvino": "openvino",
    "ai-edge-litert": "litert",
    "tflite-runtime": "tflite_runtime",
    "torch": "torch",
}
# CPU features that decide which kernels a runtime can use on x86 and Arm.
FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16",
         "avx_vnni", "amx_int8", "amx_bf16", "neon", "asimd", "asimddp", "sve", "i8mm")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """CPU model, logical cores and the ISA flags in ``FLAGS`` that the CPU reports.

    Reads /proc/cpuinfo on Linux; elsewhere falls back to ``platform.processor()`` and
    reports no flags (the record then says ``"flags_source": "unavailable"``).
    """
    model, flags = platform.processor() or platform.machine(), set()
    source = "unavailable"
    if cpuinfo.is_file():
        source = str(cpuinfo)
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "hardware", "cpu model") and value.strip():
                model = value.strip()
            elif key in ("flags", "features"):
                flags.update(value.split())
    return {
        "model": model,
        "logical_cores": os.cpu_count(),
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "flags": {flag: flag in flags for flag in FLAGS},
        "flags_source": source,
    }


def package_versions() -> dict[str, str]:
    """Installed versions of the numeric and runtime packages (absent ones are left out)."""
    found: dict[str, str] = {}
    for dist, key in PACKAGES.items():
        try:
            found.setdefault(key, importlib.metadata.version(dist))
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def system_info() -> dict[str, Any]:
    """The machine and software record attached to every result."""
    return {
        "cpu": cpu_info(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "total_memory_mb": _total_memory_mb(),
    }


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: ``VmHWM`` from /proc/self/status, because ``getrusage``'s ``ru_maxrss`` survives
    ``exec`` and would report the parent's peak in a freshly spawned bench process.
    Elsewhere: ``getrusage`` (KiB on Linux, bytes on macOS).
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def current_rss_mb() -> float | None:
    """Current resident set size in MiB from /proc/self/status (None where unavailable)."""
    status = Path("/proc/self/status")
    if not status.is_file():
        return None
    for line in status.read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def model_size_bytes(path: Path) -> int:
    """Bytes on disk of a model file, counting an OpenVINO ``.xml``'s ``.bin`` beside it."""
    path = Path(path)
    size = path.stat().st_size
    weights = path.with_suffix(".bin")
    if path.suffix.lower() == ".xml" and weights.is_file():
        size += weights.stat().st_size
    return size


def device_label(info: dict[str, Any] | None = None) -> str:
    """A default device key for merged reports, e.g. ``"AMD EPYC, 2 cores"``."""
    info = info or system_info()
    return f"{info['cpu']['model']}, {info['cpu']['logical_cores']} cores"


def _total_memory_mb() -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 1024
    return None
