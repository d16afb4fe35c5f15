"""Distillation runs on CPU: config errors, the CLI's exit code, exact resume, 2-process DDP."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import typer
import yaml

from cli.common import run_app
from cli.distill import register
from distill.registry import create_model
from distill.train.checkpoint import load_checkpoint
from distill.train.config import load_config
from distill.train.main import main
from edge.errors import ConfigError
from tests.conftest import lfw_bytes

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "distill" / "configs" / "tiny_test.yaml"
PEOPLE = ["Aaron_Peirsol", "Abdullah_Gul", "Adrien_Brody", "Al_Gore", "Alejandro_Toledo",
          "Alvaro_Uribe", "Amelie_Mauresmo", "Andre_Agassi", "Andy_Roddick", "Angelina_Jolie",
          "Ann_Veneman", "Anna_Kournikova"]


@pytest.fixture(scope="module")
def setup(data_root, tmp_path_factory):
    """Twelve LFW faces, a frozen tiny PyTorch teacher, and a cache shared by the tests."""
    root = tmp_path_factory.mktemp("distill_train")
    for name in PEOPLE:
        (root / "faces" / name).mkdir(parents=True)
        (root / "faces" / name / f"{name}_0001.jpg").write_bytes(lfw_bytes(data_root, name, 1))
    torch.manual_seed(0)
    torch.save(create_model("iresnet_tiny").state_dict(), root / "teacher.pt")
    return root


def _config(setup: Path, out: str, **extra):
    overrides = {"data.train": str(setup / "faces"), "data.val_fraction": 0.17,
                 "teacher.name": "iresnet_tiny", "teacher.path": str(setup / "teacher.pt"),
                 "out": str(setup / out), **extra}
    return load_config(TINY, overrides)


@pytest.fixture()
def cache(setup, monkeypatch):
    monkeypatch.setenv("MASKEDGE_CACHE", str(setup / "cache"))


def test_config_errors_list_valid_values(tmp_path):
    with pytest.raises(ConfigError, match="valid keys: .*batch_size"):
        load_config(TINY, {"batch_sise": 8})
    with pytest.raises(ConfigError, match="sgd, adamw"):
        load_config(TINY, {"optim.name": "lion"})
    with pytest.raises(ConfigError, match="random, teacher-distilled, checkpoint:<path>"):
        load_config(TINY, {"init": "imagenet"})
    with pytest.raises(ConfigError, match="mobilefacenet_tiny"):
        load_config(TINY, {"student.name": "resnet9000"})
    with pytest.raises(ConfigError, match="kd_cosine"):
        load_config(TINY, {"losses": [{"name": "kd_l1"}]})
    with pytest.raises(ConfigError, match="cpu, cuda"):
        load_config(TINY, {"device": "tpu"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(bad)


def test_cli_bad_config_exits_2(tmp_path, capsys):
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"optim": {"name": "lion"}}))
    assert run_app(app, ["distill", "--config", str(bad)]) == 2
    assert "sgd, adamw" in capsys.readouterr().err
    assert run_app(app, ["distill", "--config", str(TINY), "--set", "nokey"]) == 2


def test_prelu_fade_schedule_and_its_errors(setup, cache, tmp_path):
    from distill.models.layers import FadingPReLU
    from distill.train.checkpoint import save_checkpoint
    from distill.train.main import _prelu_fader

    with pytest.raises(ConfigError, match="prelu_fade_steps must be an integer >= 0"):
        load_config(TINY, {"student.prelu_fade_steps": -1})
    relu = create_model("mobilefacenet_tf_relu")
    fade = _prelu_fader(load_config(TINY, {"student.prelu_fade_steps": 100}), relu, 120)
    slopes = [m for m in relu.modules() if isinstance(m, FadingPReLU)]
    for step, expected in ((0, 1.0), (25, 0.75), (100, 0.0), (130, 0.0)):
        fade(step)
        assert all(m.fade == pytest.approx(expected) for m in slopes), step
    with pytest.raises(ConfigError, match="longer than the run"):  # TINY: 2 epochs
        _prelu_fader(load_config(TINY, {"student.prelu_fade_steps": 250}), relu, 120)
    with pytest.raises(ConfigError, match="has no fading PReLU"):
        _prelu_fader(load_config(TINY, {"student.prelu_fade_steps": 1}), create_model("mobilefacenet_tiny"), 9)
    # A whole run: a ReLU student starts from a PReLU checkpoint; its fade outlasts epoch 0,
    # so epoch 0 (still part PReLU) cannot be best.pt.
    init = tmp_path / "prelu.pt"
    save_checkpoint({"model": create_model("mobilefacenet_tf").state_dict()}, init)
    cfg = _config(setup, "fade", epochs=2, init=f"checkpoint:{init}",
                  **{"student.name": "mobilefacenet_tf_relu", "student.prelu_fade_steps": 2,
                     "teacher.name": "mobilefacenet-tflite", "teacher.path": None})  # 192-d
    main(cfg, progress=False)
    rows = [json.loads(r) for r in (setup / "fade" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["best"]) for r in rows if r["kind"] == "epoch"] == [(1, False), (2, True)]
    create_model("mobilefacenet_tf_relu").load_state_dict(_weights(setup / "fade" / "best.pt"))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(setup, cache, monkeypatch):
    import distill.train.main as train_main

    main(_config(setup, "whole", epochs=2, licence="test data: CC-BY-4.0"), progress=False)
    from quantize.student import load_student

    assert load_student(setup / "whole" / "last.pt").licence == "test data: CC-BY-4.0"  # -> cards
    split = _config(setup, "split", epochs=2)
    real = train_main._end_epoch

    def crash_after_first_epoch(run, epoch, step, best, train):
        real(run, epoch, step, best, train)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_main, "_end_epoch", crash_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        main(split, progress=False)
    monkeypatch.setattr(train_main, "_end_epoch", real)
    last = setup / "split" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 0
    main(split, resume=str(last), progress=False)
    whole = _weights(setup / "whole" / "last.pt")
    for key, value in _weights(last).items():
        assert torch.equal(value, whole[key]), key
    rows = (setup / "split" / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in r for r in rows) == 2  # no epoch logged twice
    with pytest.raises(ConfigError, match="batch_size"):
        main(_config(setup, "split", epochs=2, batch_size=4), resume=str(last), progress=False)


FORK_AFTER_OPENCV = """
import sys
import cv2
import numpy as np
cv2.setNumThreads(2)  # as face alignment does on a first run: OpenCV's thread pool is running
for _ in range(3):
    cv2.GaussianBlur(np.random.rand(1500, 1500).astype(np.float32), (31, 31), 0)
from distill.train.config import load_config
from distill.train.main import main
root = sys.argv[1]
overrides = {"data.train": root + "/faces", "data.val_fraction": 0.17, "teacher.name": "iresnet_tiny",
             "teacher.path": root + "/teacher.pt", "out": root + "/workers", "workers": 1, "epochs": 1}
main(load_config(sys.argv[2], overrides), progress=False)
print("trained")
"""


def test_dataloader_workers_start_after_opencv_used_threads(setup, cache):
    """A first run aligns its faces with OpenCV's thread pool running, then forks DataLoader
    workers. Each worker used to stop the pool it inherited, and waited forever on locks of
    threads that do not exist in a child: the run hung at epoch 0."""
    import signal
    import subprocess
    import sys

    run = subprocess.Popen([sys.executable, "-c", FORK_AFTER_OPENCV, str(setup), str(TINY)],
                           cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    try:
        out, err = run.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)  # the hung worker too
        pytest.fail("training with a DataLoader worker hung after OpenCV had run threads")
    assert run.returncode == 0 and "trained" in out, err[-2000:]
    assert load_checkpoint(setup / "workers" / "last.pt")["epoch"] == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, cfg, port: int, cache: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), MASKEDGE_CACHE=cache)
    main(cfg, progress=False)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(setup, cache):
    """Two gloo ranks with half batches each take the steps one process takes with the whole
    batch in two micro-batches (``accumulate: 2``, split the way the ranks split it): same
    samples, same per-half BatchNorm statistics, averaged gradients."""
    sgd = {"epochs": 2, "optim.name": "sgd", "optim.lr": 0.02, "optim.momentum": 0.0,
           "optim.weight_decay": 0.0, "optim.schedule": "constant"}
    main(_config(setup, "single", accumulate=2, **sgd), progress=False)  # also caches the data
    ddp = _config(setup, "ddp", **sgd)
    mp.spawn(_ddp_worker, args=(ddp, _free_port(), str(setup / "cache")), nprocs=2, join=True)
    torch.manual_seed(0)  # the run's seed: the student's initial weights
    start = create_model("mobilefacenet_tiny", embedding_size=32).state_dict()
    one, two = _weights(setup / "single" / "last.pt"), _weights(setup / "ddp" / "last.pt")
    # Parameters, not BN running statistics: rank 0 keeps only its own half's.
    keys = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]
    assert max((one[k] - start[k]).abs().max().item() for k in keys) > 1e-3  # it trained
    for key in keys:
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-6), key


def _fake_pack(faces_dir: Path):
    """A pack of the fixture's 12 faces: unmasked = the aligned crops, masked = lower half
    greyed out; ten folds of one genuine (a face with its mirror) and one impostor pair."""
    import numpy as np

    from benchmarks.packs import Pack
    from distill.data.faces import prepare_faces
    from edge.paths import cache_dir

    faces = prepare_faces(faces_dir, cache_dir("distill/faces"), progress=False)
    crops = np.asarray(faces.crops[:10])
    unmasked = np.concatenate([crops, crops[:, :, ::-1]])  # 20 images: 10 people, 2 each
    masked = unmasked.copy()
    masked[:, 64:] = 128
    pairs = [(i, i + 10, 1, i) for i in range(10)] + [(i, (i + 1) % 10, 0, i) for i in range(10)]
    pairs = np.array(pairs, np.int64)
    return Pack("fake", "fake", faces_dir, [str(i) for i in range(20)], unmasked, masked,
                pairs[:, 0], pairs[:, 1], pairs[:, 2].astype(bool), pairs[:, 3],
                np.tile(np.arange(10), 2), {})


def test_evaluation_each_epoch_and_at_the_end(setup, cache, monkeypatch):
    import json

    import distill.train.main as train_main

    pack = _fake_pack(setup / "faces")
    monkeypatch.setattr(train_main, "_open_pack", lambda cfg: pack)
    cfg = _config(setup, "evaluated", epochs=1, **{"eval.pack": "fake", "eval.initial": True})
    main(cfg, progress=False)
    rows = [json.loads(r) for r in (setup / "evaluated" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows if r["kind"] != "step"] == ["initial", "epoch"]
    assert set(rows[0]["eval"]) == {"U-U", "U-M", "M-M"}
    final = json.loads((setup / "evaluated" / "final.json").read_text())
    assert 0.0 <= final["evaluation"]["M-M"]["accuracy"] <= 1.0
    assert (setup / "evaluated" / "accuracy.png").is_file()


def test_lfw_fold_runs_are_scored_on_the_other_folds(setup, cache):
    from distill.train.engine import held_out_pack

    pack = _fake_pack(setup / "faces")
    held = held_out_pack(pack, (1, 2, 3, 4, 5))
    assert len(held.is_same) == 10 and sorted(set(held.fold.tolist())) == [0, 1, 2, 3, 4]
    assert held.unmasked.shape[0] == len(held.keys) == len(held.ids)
    original = {(pack.keys[a], pack.keys[b]) for a, b in zip(pack.idx_a[pack.fold >= 5], pack.idx_b[pack.fold >= 5])}
    assert {(held.keys[a], held.keys[b]) for a, b in zip(held.idx_a, held.idx_b)} == original
