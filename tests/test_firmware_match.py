"""firmware_examples/match: the C decision agrees with edge.access.Decider on real embeddings."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge.access import Decider
from edge.access.store import TemplateSet
from edge.runtimes import load_model
from edge.zoo import resolve_model

FOLDER = Path(__file__).resolve().parents[1] / "firmware_examples" / "match"


def _twin():
    spec = importlib.util.spec_from_file_location("make_inputs", FOLDER / "make_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler on this machine")
def test_c_matches_python(tmp_path):
    twin = _twin()
    templates, owners, probes = twin.write(tmp_path)
    binary = tmp_path / "match"
    subprocess.run(["cc", "-O2", "-std=c99", "-Wall", "-Werror", str(FOLDER / "match.c"), "-o", str(binary)],
                   check=True)
    threshold, margin = (tmp_path / "threshold.txt").read_text().split()
    out = subprocess.run([str(binary), str(tmp_path / "gallery.bin"), str(tmp_path / "probes.bin"),
                          threshold, margin], capture_output=True, text=True, check=True).stdout
    c_rows = [line.split() for line in out.strip().splitlines()]
    card = load_model(resolve_model("sface")).card
    names = tuple(str(i) for i in sorted(set(owners)))
    starts = np.searchsorted(np.asarray(owners), np.arange(len(names)))
    expected = Decider(card, far=1e-3, margin=float(margin)).decide(
        probes, TemplateSet(templates, np.asarray(starts), names))
    assert [int(r[0]) for r in c_rows] == [int(d.person) if d.person else -1 for d in expected]
    np.testing.assert_allclose([float(r[1]) for r in c_rows], [d.score for d in expected], atol=1e-5)
    assert [int(r[0]) for r in c_rows] == [0, 0]  # both probes are person 0 (Obama)


def test_c_rejects_truncated_input(tmp_path):
    if shutil.which("cc") is None:
        pytest.skip("no C compiler on this machine")
    binary = tmp_path / "match"
    subprocess.run(["cc", "-O2", "-std=c99", str(FOLDER / "match.c"), "-o", str(binary)], check=True)
    (tmp_path / "g.bin").write_bytes(np.array([4, 8], "<i4").tobytes())
    (tmp_path / "p.bin").write_bytes(np.array([1, 8], "<i4").tobytes())
    proc = subprocess.run([str(binary), str(tmp_path / "g.bin"), str(tmp_path / "p.bin"), "0.4", "0.05"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "truncated" in proc.stderr
