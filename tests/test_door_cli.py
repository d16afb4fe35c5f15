"""The door from the command line: the offline demo with no data root, and an enroll ->
list -> rename -> run -> remove session on the shipped photos with an audit log."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import main
from edge.access.crypto import create_key_file

ASSETS = Path(__file__).resolve().parents[1] / "edge" / "assets" / "demo_faces"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_demo_runs_offline_without_a_data_root(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("MASKEDGE_DATA_ROOT", raising=False)
    monkeypatch.setenv("MASKEDGE_CACHE", str(tmp_path / "cache"))
    code, out, err = run(capsys, "demo", "--out", str(tmp_path / "demo"))
    assert code == 0, out + err
    assert "4/4 decisions as expected" in out
    lines = (tmp_path / "demo" / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["admitted"] for line in lines] == [True, True, False, False]


def test_enroll_list_rename_run_remove(capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("MASKEDGE_GALLERY_KEY", raising=False)
    db, key = str(tmp_path / "door.db"), str(tmp_path / "door.key")
    code, out, err = run(capsys, "access", "enroll", "--name", "Barack Obama", str(ASSETS / "obama_1.jpg"),
                         "-g", db, "-k", key)
    assert code == 0 and "3 template(s)" in out, out + err
    code, out, _ = run(capsys, "access", "rename", "Barack Obama", "Obama", "-g", db, "-k", key)
    assert code == 0
    code, out, _ = run(capsys, "access", "list", "-g", db, "-k", key)
    assert "Obama" in out and "3 templates" in out
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("obama_2.jpg", "biden_1.jpg"):
        shutil.copy(ASSETS / name, frames / name)
    (frames / "corrupt.jpg").write_bytes(b"\xff\xd8\xff broken")
    audit = tmp_path / "audit.jsonl"
    code, out, err = run(capsys, "access", "run", "--source", str(frames), "--audit", str(audit),
                         "-g", db, "-k", key)
    assert code == 0 and "1 admitted" in out, out + err
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [(r["source"].split("/")[-1], r["person"]) for r in records] == \
        [("biden_1.jpg", "unknown"), ("obama_2.jpg", "Obama")]
    code, out, _ = run(capsys, "access", "remove", "Obama", "-g", db, "-k", key)
    assert code == 0 and "3 templates" in out


def test_wrong_key_is_refused(capsys, tmp_path):
    db = str(tmp_path / "door.db")
    run(capsys, "access", "enroll", "--name", "A", str(ASSETS / "obama_1.jpg"), "-g", db,
        "-k", str(tmp_path / "one.key"))
    create_key_file(tmp_path / "other.key")
    code, _, err = run(capsys, "access", "list", "-g", db, "-k", str(tmp_path / "other.key"))
    assert code == 2 and "created with another key" in err and len(err.strip().splitlines()) == 1, err


def test_run_rejects_a_bad_detector_size(capsys, tmp_path):
    db, key = str(tmp_path / "door.db"), str(tmp_path / "door.key")
    run(capsys, "access", "enroll", "--name", "A", str(ASSETS / "obama_1.jpg"), "-g", db, "-k", key)
    code, _, err = run(capsys, "access", "run", "--source", str(ASSETS), "--detect-size", "300x200",
                       "-g", db, "-k", key)
    assert code == 2 and "multiples of 32" in err, err
    code, _, err = run(capsys, "access", "run", "--source", str(ASSETS), "--detect-size", "big",
                       "-g", db, "-k", key)
    assert code == 2 and "WIDTHxHEIGHT" in err, err
