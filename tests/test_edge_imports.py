"""edge/ runs on a device with numpy, OpenCV and one runtime: it must never import torch,
distill or quantize. Each module is imported in a fresh interpreter (torchao's lean-import
test does the same)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "torchvision", "torchao", "distill", "quantize")
EDGE_MODULES = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for p in (REPO / "edge").rglob("*.py")
)


def _loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True,
                         text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_edge_has_modules():
    assert "edge.runtimes.onnx" in EDGE_MODULES and len(EDGE_MODULES) > 8


@pytest.mark.parametrize("module", EDGE_MODULES)
def test_edge_module_is_torch_free(module):
    loaded = _loaded_after(f"import {module}")
    bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert not bad, f"{module} pulls in {bad[:5]}"


def test_cli_help_is_torch_free():
    loaded = _loaded_after("import main\ntry:\n    main.main(['--help'])\nexcept SystemExit:\n    pass")
    assert "torch" not in loaded
