"""Detector recall on LFW pair images and on real masked photos (RMFD).

Recall here is "at least one face found", the only thing a verification pipeline needs from
the detector on these sets (each photo shows one subject). On RMFD, where the mask hides the
mouth, it also checks that the top face's landmarks are sane: mouth corners below the nose
and every landmark inside the box. Images are read straight from the tgz files.

Run (two worker processes, one OpenCV thread each, on a 2-core machine)::

    MASKEDGE_DATA_ROOT=/path/to/data python -m benchmarks.detector_recall --workers 2
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import multiprocessing as mp
import os
import platform
import tarfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.detect import Face, YuNetDetector
from edge.errors import DatasetError, ImageError
from edge.image import read_image
from edge.paths import data_file

log = logging.getLogger(__name__)

LFW_TGZ = "lfw/lfw-a-gray.tgz"
LFW_PAIRS = "lfw/pairs.txt"
RMFD_TGZ = "rmfd/rmfd-real-masked-sample.tgz"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
REPORT_DIR = Path(__file__).parent / "reports"


@dataclass(frozen=True)
class ImageResult:
    """What the detector made of one image."""

    name: str
    faces: int
    ms: float
    score: float
    sane: bool
    readable: bool


@dataclass(frozen=True)
class RecallReport:
    """Summary figures for one data set."""

    dataset: str
    images: int
    unreadable: int
    detected: int
    recall: float
    multi_face: int
    landmark_sane_rate: float
    mean_ms: float
    median_ms: float
    p90_ms: float
    missed: list[str]


def lfw_pair_images(pairs_path: Path) -> list[str]:
    """Sorted ``lfw/<Name>/<Name>_<NNNN>.jpg`` tgz members named by an LFW pairs list.

    Raises:
        DatasetError: a malformed line (see ``benchmarks.datasets.parse_pairs``).
    """
    from benchmarks.datasets import parse_pairs, unique_images

    return [f"lfw/{key}" for key in unique_images(parse_pairs(pairs_path))]


def iter_tar_images(tgz: Path, wanted: set[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, bytes) for image files in ``tgz``, optionally only ``wanted``.

    Raises:
        DatasetError: some ``wanted`` members are not in the archive.
    """
    found = set()
    with tarfile.open(tgz) as tar:
        # Stream in archive order: one pass through the gzip instead of a seek per image.
        for member in tar:
            if not member.isfile() or not member.name.lower().endswith(IMAGE_SUFFIXES):
                continue
            if wanted is not None and member.name not in wanted:
                continue
            found.add(member.name)
            yield member.name, tar.extractfile(member).read()
    if wanted is not None and found != wanted:
        missing = sorted(wanted - found)
        raise DatasetError(f"{len(missing)} images from the pairs list are not in {tgz}, e.g. "
                           f"{missing[:3]}: use the full LFW archive")


def landmarks_sane(face: Face) -> bool:
    """Mouth corners below the nose, nose below the eyes, all five points inside the box."""
    (_, rey), (_, ley), (_, ny), (_, rmy), (_, lmy) = face.landmarks
    x, y, w, h = face.box
    inside = np.all((face.landmarks >= [x, y]) & (face.landmarks <= [x + w, y + h]))
    return bool(inside and max(rey, ley) < ny < min(rmy, lmy))


_DETECTOR: YuNetDetector | None = None


def _init_worker(options: dict) -> None:
    """Build one detector per worker process; one OpenCV thread so workers don't fight."""
    global _DETECTOR
    cv2.setNumThreads(1)
    _DETECTOR = YuNetDetector(**options, threads=1)


def _run_one(item: tuple[str, bytes]) -> ImageResult:
    """Decode and detect one image; the time covers detection only, not JPEG decoding."""
    name, data = item
    try:
        image = read_image(data)
    except ImageError as err:
        log.warning("%s: %s", name, err)
        return ImageResult(name, 0, 0.0, 0.0, False, False)
    start = time.perf_counter()
    faces = _DETECTOR.detect(image)
    ms = (time.perf_counter() - start) * 1000
    if not faces:
        return ImageResult(name, 0, ms, 0.0, False, True)
    return ImageResult(name, len(faces), ms, faces[0].score, landmarks_sane(faces[0]), True)


def measure_recall(dataset: str, images: Iterator[tuple[str, bytes]], total: int,
                   detector_options: dict | None = None, workers: int = 2) -> RecallReport:
    """Run YuNet over ``images`` in ``workers`` processes and summarise.

    Args:
        dataset: label for the report.
        images: (name, encoded bytes) pairs.
        total: number of images, for the progress bar.
        detector_options: ``YuNetDetector`` keyword arguments (backend, thresholds...).
        workers: worker processes (each single-threaded).

    Returns:
        The data set's ``RecallReport``.
    """
    options = dict(detector_options or {})
    results: list[ImageResult] = []
    with mp.get_context("spawn").Pool(workers, _init_worker, (options,)) as pool:
        for result in _progress(pool.imap(_run_one, images, chunksize=16), total, dataset):
            results.append(result)
    return _summarise(dataset, results)


def _summarise(dataset: str, results: list[ImageResult]) -> RecallReport:
    """Reduce per-image results to the report's figures."""
    readable = [r for r in results if r.readable]
    hits = [r for r in readable if r.faces]
    ms = np.sort([r.ms for r in readable]) if readable else np.zeros(1)
    return RecallReport(
        dataset=dataset, images=len(results), unreadable=len(results) - len(readable),
        detected=len(hits), recall=len(hits) / max(len(readable), 1),
        multi_face=sum(r.faces > 1 for r in hits),
        landmark_sane_rate=sum(r.sane for r in hits) / max(len(hits), 1),
        mean_ms=float(ms.mean()), median_ms=float(np.median(ms)),
        p90_ms=float(ms[int(0.9 * (len(ms) - 1))]),
        missed=sorted(r.name for r in readable if not r.faces),
    )


def _progress(iterable, total: int, desc: str):
    """Wrap in a tqdm bar when tqdm is installed (it is optional for the edge install)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="img")


def write_report(reports: list[RecallReport], options: dict, workers: int,
                 out_dir: Path = REPORT_DIR) -> Path:
    """Write ``detector_recall.json`` and ``detector_recall.md`` into ``out_dir``.

    Returns:
        The Markdown file's path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {"opencv": cv2.__version__, "python": platform.python_version(),
           "cpu": platform.processor() or platform.machine(), "workers": workers,
           "threads_per_worker": 1, "detector": options,
           # Other jobs on the machine inflate the timings; record how busy it was.
           "load_average_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count()}
    (out_dir / "detector_recall.json").write_text(
        json.dumps({"environment": env, "results": [asdict(r) for r in reports]}, indent=2))
    lines = [
        "# Detector recall (YuNet 2023mar)", "",
        f"Detector options: `{json.dumps(options)}`; OpenCV {env['opencv']}, "
        f"{workers} worker processes x 1 thread, CPU `{env['cpu']}` x {env['cpu_count']}, "
        f"1-min load average {env['load_average_1min']} at the end of the run "
        "(a load above the core count means the times include waiting for a core).", "",
        "Recall = share of readable images where at least one face was found. Landmarks sane "
        "= top face has eyes above the nose, mouth corners below it and all five points in "
        "its box. Time = detection only (letterbox + network + decode/NMS), single thread.", "",
        "| dataset | images | recall | multi-face | landmarks sane | mean ms | median ms | p90 ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in reports:
        lines.append(f"| {r.dataset} | {r.images} | {r.recall:.2%} ({r.detected}) | "
                     f"{r.multi_face} | {r.landmark_sane_rate:.2%} | {r.mean_ms:.1f} | "
                     f"{r.median_ms:.1f} | {r.p90_ms:.1f} |")
    lines.append("")
    for r in reports:
        shown = ", ".join(f"`{m}`" for m in r.missed[:20]) or "none"
        lines.append(f"- {r.dataset}: {r.unreadable} unreadable; missed: {shown}"
                     + (f" (+{len(r.missed) - 20} more)" if len(r.missed) > 20 else ""))
    path = out_dir / "detector_recall.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def run(workers: int = 2, limit: int | None = None, backend: str = "opencv",
        score_threshold: float = 0.6) -> list[RecallReport]:
    """Measure recall on LFW pair images and RMFD, write the reports, return the figures.

    Args:
        workers: worker processes.
        limit: only the first ``limit`` images of each set (a quick check).
        backend: YuNet backend, ``"opencv"`` or ``"onnxruntime"``.
        score_threshold: detector score threshold.

    Raises:
        DataRootError: the data root lacks LFW, its pairs list or RMFD.
    """
    options = {"backend": backend, "score_threshold": score_threshold}
    lfw = lfw_pair_images(data_file(LFW_PAIRS))[:limit]
    rmfd_tgz = data_file(RMFD_TGZ)
    with tarfile.open(rmfd_tgz) as tar:
        rmfd_count = sum(m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES) for m in tar)
    rmfd_count = min(rmfd_count, limit or rmfd_count)
    rmfd_images = itertools.islice(iter_tar_images(rmfd_tgz), rmfd_count)
    reports = [
        measure_recall("LFW pair images", iter_tar_images(data_file(LFW_TGZ), set(lfw)),
                       len(lfw), options, workers),
        measure_recall("RMFD real masked", rmfd_images, rmfd_count, options, workers),
    ]
    path = write_report(reports, options, workers)
    log.info("report written to %s", path)
    return reports


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--backend", choices=["opencv", "onnxruntime"], default="opencv")
    parser.add_argument("--score-threshold", type=float, default=0.6)
    args = parser.parse_args()
    for r in run(args.workers, args.limit, args.backend, args.score_threshold):
        print(f"{r.dataset}: recall {r.recall:.2%} ({r.detected}/{r.images - r.unreadable}), "
              f"landmarks sane {r.landmark_sane_rate:.2%}, {r.mean_ms:.1f} ms/img")
    print(f"report: {REPORT_DIR / 'detector_recall.md'}")


if __name__ == "__main__":
    main()
