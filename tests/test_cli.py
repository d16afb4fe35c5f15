"""The CLI on real LFW photos: right decisions for both real models, and every bad input
ends with exit code 2 and one line that says what is wrong, never a traceback."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import main
from edge.card import card_path
from edge.zoo import resolve_model

REPO = Path(__file__).resolve().parents[1]
SAME = (("Tony_Blair", 1), ("Tony_Blair", 2))
DIFFERENT = (("Tony_Blair", 1), ("Colin_Powell", 1))


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("model", ["sface", "mobilefacenet-tflite"])
def test_verify_decides_right_on_lfw(capsys, lfw_photo, model):
    code, out, _ = run(capsys, "verify", str(lfw_photo(*SAME[0])), str(lfw_photo(*SAME[1])), "-m", model)
    assert code == 0 and "SAME person" in out, out
    code, out, _ = run(capsys, "verify", str(lfw_photo(*DIFFERENT[0])), str(lfw_photo(*DIFFERENT[1])), "-m", model)
    assert code == 0 and "DIFFERENT people" in out, out
    assert "time (ms)" in out and "embed" in out


def test_embed_writes_unit_vectors(capsys, lfw_photo, tmp_path):
    out_file = tmp_path / "emb.npy"
    code, out, _ = run(capsys, "embed", str(lfw_photo(*SAME[0])), str(lfw_photo(*DIFFERENT[1])),
                       "-o", str(out_file))
    assert code == 0, out
    emb = np.load(out_file)
    assert emb.shape == (2, 128)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


def test_models_list_and_show(capsys, data_root):
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "sface" in out and "mobilefacenet-tflite" in out
    code, out, _ = run(capsys, "models", "show", "sface")
    assert json.loads(out)["embedding_size"] == 128


def _bad_photo(tmp_path: Path, kind: str, lfw_photo) -> Path:
    path = tmp_path / f"{kind}.jpg"
    good = lfw_photo(*SAME[0]).read_bytes()
    content = {
        "empty": b"",
        "text": b"this is not an image\n" * 20,
        "truncated": good[: len(good) // 2],
    }
    if kind == "noface":
        import cv2

        cv2.imwrite(str(path), np.full((240, 320, 3), 128, np.uint8))
    else:
        path.write_bytes(content[kind])
    return path


@pytest.mark.parametrize("kind, words", [
    ("empty", "empty"), ("text", "not a readable image"), ("truncated", "truncated"), ("noface", "no face"),
])
def test_bad_photos(capsys, tmp_path, lfw_photo, kind, words):
    bad = _bad_photo(tmp_path, kind, lfw_photo)
    code, _, err = run(capsys, "verify", str(bad), str(lfw_photo(*SAME[1])))
    assert code == 2
    assert err.startswith("error: ") and words in err.lower() and len(err.strip().splitlines()) == 1, err


def test_missing_photo(capsys, tmp_path, lfw_photo):
    code, _, err = run(capsys, "verify", str(tmp_path / "nope.jpg"), str(lfw_photo(*SAME[1])))
    assert code == 2 and "does not exist" in err.lower(), err


def _model_copy(tmp_path: Path) -> Path:
    src = resolve_model("sface")
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    shutil.copy(card_path(src), card_path(dst))
    return dst


def test_truncated_model_file(capsys, tmp_path, lfw_photo):
    model = _model_copy(tmp_path)
    model.write_bytes(model.read_bytes()[:1000])
    code, _, err = run(capsys, "verify", str(lfw_photo(*SAME[0])), str(lfw_photo(*SAME[1])), "-m", str(model))
    assert code == 2 and "truncated" in err, err


def test_card_checksum_mismatch(capsys, tmp_path, lfw_photo):
    model = _model_copy(tmp_path)
    card = json.loads(card_path(model).read_text())
    card["sha256"] = "0" * 64
    card_path(model).write_text(json.dumps(card))
    code, _, err = run(capsys, "verify", str(lfw_photo(*SAME[0])), str(lfw_photo(*SAME[1])), "-m", str(model))
    assert code == 2 and "does not match its card" in err, err


def test_unknown_model_suffix(capsys, tmp_path, lfw_photo):
    model = tmp_path / "model.caffemodel"
    model.write_bytes(b"x")
    code, _, err = run(capsys, "verify", str(lfw_photo(*SAME[0])), str(lfw_photo(*SAME[1])), "-m", str(model))
    assert code == 2 and "unknown model suffix" in err, err


def test_unknown_option_and_runtime(capsys, lfw_photo):
    code, _, err = run(capsys, "verify", "a.jpg", "b.jpg", "--runtime", "tensorflow")
    assert code == 2 and "tensorflow" in err
    code, _, err = run(capsys, "verify", "a.jpg", "b.jpg", "--colour", "red")
    assert code == 2 and "--colour" in err


def test_missing_data_root_in_a_subprocess(tmp_path, lfw_photo):
    """A real process: no data root, a model that needs it -> exit 2, one line, no traceback."""
    env = {"PATH": "/usr/bin:/bin", "MASKEDGE_CACHE": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "main.py", "verify", str(lfw_photo(*SAME[0])), str(lfw_photo(*SAME[1])),
         "-m", "mobilefacenet-tflite"], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "MASKEDGE_DATA_ROOT" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("verbose", [False, True])
def test_import_noise_hidden_unless_verbose(caplog, verbose):
    """torchao's 'Failed to load <CUDA kernel>.so' on a CPU install is hidden; its other
    warnings and the kit's own are not; --verbose shows everything."""
    from cli.common import configure

    configure(None, verbose)
    torchao = logging.getLogger("torchao")
    with caplog.at_level(logging.WARNING):
        torchao.warning("Failed to load /x/_C_mxfp8.so: Could not load this library")
        torchao.warning("a real torchao warning")
    messages = [r.getMessage() for r in caplog.records]
    assert "a real torchao warning" in messages
    assert any(m.startswith("Failed to load") for m in messages) == verbose
    configure(None, False)  # leave the filters as the CLI sets them


@pytest.mark.parametrize("verbose", [False, True])
def test_converter_chatter_hidden_unless_verbose(verbose):
    """Third-party INFO (onnxscript passes, litert-torch's JAX lowering notes on the root
    logger) is hidden, their warnings and the kit's INFO are not; --verbose enables all."""
    from cli.common import configure

    configure(None, verbose)
    try:
        assert logging.getLogger("quantize.exporter").isEnabledFor(logging.INFO)
        assert logging.getLogger("onnxscript.rewriter").isEnabledFor(logging.WARNING)
        assert logging.getLogger("onnxscript.rewriter").isEnabledFor(logging.INFO) == verbose
        assert logging.getLogger().isEnabledFor(logging.INFO) == verbose
        assert logging.getLogger("edge.access").isEnabledFor(logging.DEBUG) == verbose
    finally:
        configure(None, False)

