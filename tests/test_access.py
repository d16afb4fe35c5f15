"""Access-control core on real LFW faces with the real SFace model and YuNet detector.

The SFace card has no calibrated thresholds yet, so the threshold is calibrated here, on
impostor pairs of LFW people who are neither enrolled nor used as strangers, and then
checked on a disjoint impostor set. Detections and embeddings are computed once per module.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.access import (
    KEY_ENV, AuditContext, AuditLog, Decider, FolderSource, Gallery, GalleryError,
    GalleryKeyError, GalleryModelError, QualityConfig, Station, load_key, open_source,
)
from edge.access.decide import AMBIGUOUS, BELOW_THRESHOLD, MATCH, Decision, person_scores
from edge.access.quality import BLURRY, POSE, TOO_SMALL, check_crop, check_face
from edge.align import align
from edge.card import ModelCard, Threshold
from edge.detect import create_detector
from edge.errors import ConfigError, ModelCardError
from edge.image import read_image
from edge.runtimes import load_model
from edge.zoo import resolve_model

REPO = Path(__file__).resolve().parents[1]
FAR = 1e-2
N_ENROLLED, N_STRANGERS, N_CALIBRATION = 20, 150, 80
pytestmark = pytest.mark.realdata


# ---- shared real-data fixtures ------------------------------------------------------------
def _central_face(faces, shape):
    """LFW centres the subject; other detections are bystanders."""
    centre = np.array([shape[1] / 2, shape[0] / 2])
    return min(faces, key=lambda f: np.hypot(*(np.array(f.box[:2]) + np.array(f.box[2:]) / 2 - centre)))


def _pick_people(names_by_person: dict[str, list[str]]):
    rng = np.random.default_rng(7)
    multi = sorted(p for p, files in names_by_person.items() if len(files) >= 3)
    single = sorted(p for p, files in names_by_person.items() if len(files) < 3)
    enrolled = list(rng.choice(multi, N_ENROLLED, replace=False))
    others = list(rng.choice(single, N_STRANGERS + N_CALIBRATION, replace=False))
    return enrolled, others[:N_STRANGERS], others[N_STRANGERS:]


@pytest.fixture(scope="module")
def lfw(data_root):
    """Faces of enrolled people (photo 1 enrols, photos 2-3 probe), strangers and a
    calibration set, each as image bytes, aligned crop and SFace embedding."""
    with tarfile.open(data_root / "lfw" / "lfw-a-gray.tgz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
        by_person: dict[str, list[str]] = {}
        for m in members:
            by_person.setdefault(m.name.split("/")[1], []).append(m.name)
        enrolled, strangers, calibration = _pick_people(by_person)
        wanted = {f"lfw/{p}/{p}_{n:04d}.jpg": (p, n) for p in enrolled for n in (1, 2, 3)}
        wanted.update({f"lfw/{p}/{p}_0001.jpg": (p, 1) for p in strangers + calibration})
        # One pass in archive order: seeking backwards in a .tgz re-reads it from the start.
        raw = {wanted[m.name]: tar.extractfile(m).read() for m in members if m.name in wanted}
    detector = create_detector("yunet")
    model = load_model(resolve_model("sface"))
    keys, crops, faces = [], [], {}
    for key in sorted(raw):
        image = read_image(raw[key])
        found = detector.detect(image)
        if not found:
            continue
        faces[key] = _central_face(found, image.shape)
        keys.append(key)
        crops.append(align(image, faces[key].landmarks, tuple(model.card.input.size)))
    embeddings = model.embed(np.stack(crops))
    emb = dict(zip(keys, embeddings))
    return dict(raw=raw, emb=emb, faces=faces, crops=dict(zip(keys, crops)), model=model,
                detector=detector, enrolled=[p for p in enrolled if (p, 1) in emb],
                strangers=[p for p in strangers if (p, 1) in emb],
                calibration=[p for p in calibration if (p, 1) in emb])


def _threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Lowest cosine that accepts at most floor(far * n) of the impostor scores."""
    ordered = np.sort(impostor)[::-1]
    k = int(np.floor(far * len(ordered)))
    return float(np.nextafter(ordered[k], np.inf))


@pytest.fixture(scope="module")
def card(lfw):
    """SFace's card with one threshold calibrated here, at FAR 1e-2, on LFW impostor pairs."""
    cal = np.stack([lfw["emb"][(p, 1)] for p in lfw["calibration"]])
    scores = (cal @ cal.T)[np.triu_indices(len(cal), k=1)]
    assert len(scores) >= 3000, "calibration needs a few thousand impostor pairs"
    cosine = _threshold_at_far(scores, FAR)
    threshold = Threshold(far=FAR, cosine=cosine, data=f"LFW-a gray, {len(scores)} impostor pairs")
    return dataclasses.replace(lfw["model"].card, thresholds=(threshold,))


@pytest.fixture()
def key(monkeypatch) -> bytes:
    monkeypatch.delenv(KEY_ENV, raising=False)  # load_key must not see the caller's key
    return os.urandom(32)


@pytest.fixture()
def enrolled_gallery(tmp_path, lfw, card, key):
    gallery = Gallery.create(tmp_path / "gallery.db", card, key)
    for person in lfw["enrolled"]:
        gallery.enroll(person, lfw["emb"][(person, 1)][None], ["photo"])
    yield gallery
    gallery.close()


# ---- decisions on real faces ---------------------------------------------------------------
def test_admits_enrolled_rejects_strangers_at_calibrated_far(lfw, card, enrolled_gallery):
    decider = Decider(card, far=FAR)
    templates = enrolled_gallery.templates()
    assert len(templates) == len(lfw["enrolled"]) == N_ENROLLED
    probes = [(p, n) for p in lfw["enrolled"] for n in (2, 3) if (p, n) in lfw["emb"]]
    decisions = decider.decide(np.stack([lfw["emb"][k] for k in probes]), templates)
    assert all(d.admitted == (d.reason == MATCH) and (d.score >= d.threshold) != (
        d.reason == BELOW_THRESHOLD) for d in decisions)
    admit_rate = np.mean([d.person == k[0] for d, k in zip(decisions, probes)])
    wrong = sum(d.admitted and d.person != k[0] for d, k in zip(decisions, probes))
    strangers = np.stack([lfw["emb"][(p, 1)] for p in lfw["strangers"]])
    scores = person_scores(strangers, templates)  # (strangers, enrolled): every pair impostor
    measured_far = float(np.mean(scores >= decider.threshold))
    stranger_decisions = decider.decide(strangers, templates)
    open_set = np.mean([d.admitted for d in stranger_decisions])
    print(f"\nthreshold {decider.threshold:.4f} at FAR {FAR:g}; genuine admit rate {admit_rate:.3f} "
          f"({len(probes)} probes, {wrong} wrong person); impostor FAR {measured_far:.4f} on "
          f"{scores.size} pairs; strangers admitted as someone {open_set:.3f} "
          f"({len(strangers)} strangers, bound {N_ENROLLED}xFAR={N_ENROLLED * FAR:.2f})")
    assert scores.size >= 2500 and FAR / 2 <= measured_far <= FAR * 2
    assert admit_rate >= 0.85 and wrong == 0
    assert open_set <= N_ENROLLED * FAR * 2
    assert all(d.reason in (MATCH, BELOW_THRESHOLD, AMBIGUOUS) for d in stranger_decisions)


def test_margin_rule_refuses_lookalikes(lfw, card, tmp_path, key):
    person = lfw["enrolled"][0]
    with Gallery.create(tmp_path / "g.db", card, key) as gallery:
        gallery.enroll(person, lfw["emb"][(person, 1)], "photo")
        gallery.enroll("twin", lfw["emb"][(person, 1)] + 1e-3, "photo")
        probe = lfw["emb"][(person, 1)][None]
        (decision,) = Decider(card, far=FAR, margin=0.05).decide(probe, gallery.templates())
        assert decision.reason == AMBIGUOUS and decision.person is None
        assert decision.margin < 0.05 and decision.candidate in (person, "twin")
        (off,) = Decider(card, far=FAR, margin=0.0).decide(probe, gallery.templates())
        assert off.admitted


def test_far_is_chosen_never_a_raw_threshold(card, lfw):
    with pytest.raises(ModelCardError, match="choose one of: 0.01"):
        Decider(card, far=1e-3)  # the card is only calibrated at 1e-2: no silent nearest
    with pytest.raises(ModelCardError, match="no calibrated thresholds"):
        Decider(dataclasses.replace(card, thresholds=()), far=FAR)
    with pytest.raises(ConfigError):
        Decider(card, far=2.0)
    with pytest.raises(ConfigError):
        Decider(card, far=FAR, margin=-0.1)


# ---- gallery storage ----------------------------------------------------------------------
def test_incremental_enroll_remove_rename_without_reload(lfw, card, tmp_path, key, monkeypatch):
    path = tmp_path / "g.db"
    a, b, c = lfw["enrolled"][:3]
    with Gallery.create(path, card, key) as gallery:
        gallery.enroll(a, lfw["emb"][(a, 1)], "photo")
        monkeypatch.setattr("edge.access.store.TemplateStore.reload",
                            lambda self: pytest.fail("a change must not rebuild the matrix"))
        gallery.enroll(b, np.stack([lfw["emb"][(b, 1)], lfw["emb"][(b, 2)]]),
                       ["photo", "masked:surgical"])
        gallery.enroll(c, lfw["emb"][(c, 1)], "photo")
        assert gallery.templates().matrix.shape == (4, card.embedding_size)
        assert gallery.person(b).kinds == ("photo", "masked:surgical")
        gallery.rename(b, "Bea")
        assert "Bea" in gallery.templates().names and b not in gallery.templates().names
        assert gallery.remove(a) == 1
        assert gallery.templates().names == ("Bea", c)
        with pytest.raises(GalleryError, match="already enrolled"):
            gallery.rename("Bea", c)
        with pytest.raises(GalleryError, match="not enrolled"):
            gallery.remove(a)
        with pytest.raises(GalleryError, match="shape"):
            gallery.enroll("x", np.ones((1, 7)), "photo")
    monkeypatch.undo()
    with Gallery.open(path, card, key) as gallery:
        assert [p.name for p in gallery.people()] == ["Bea", c]
        scores = person_scores(lfw["emb"][(c, 2)][None], gallery.templates())
        assert np.argmax(scores[0]) == 1


def test_gallery_survives_kill_during_enroll(tmp_path, card, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    key = base64.b64encode(os.urandom(32)).decode()
    card_file = tmp_path / "card.json"
    card.save(card_file)
    script = tmp_path / "enroll.py"
    script.write_text(
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from edge.card import ModelCard\nfrom edge.access import Gallery, load_key\n"
        "card = ModelCard.load(sys.argv[2]); rng = np.random.default_rng(0)\n"
        "gallery = Gallery.create(sys.argv[1], card, load_key())\n"
        "for i in range(100000):\n"
        "    gallery.enroll(f'p{i}', rng.normal(size=(300, card.embedding_size)), 'photo')\n"
        "    print(i, flush=True)\n")
    env = dict(os.environ, **{KEY_ENV: key})
    db = tmp_path / "killed.db"
    proc = subprocess.Popen([sys.executable, str(script), str(db), str(card_file)], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if int(line) >= 4:
                time.sleep(0.013)  # land inside a later enrolment's transaction
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    with Gallery.open(db, card, load_key(environ={KEY_ENV: key})) as gallery:
        people = gallery.people()
        assert len(people) >= 5
        assert all(p.templates == 300 for p in people), "a killed enrolment left half a person"
        assert gallery.templates().matrix.shape == (300 * len(people), card.embedding_size)
        gallery.enroll("after", np.ones((1, card.embedding_size)), "photo")


def test_wrong_key_and_other_model_refuse_to_open(enrolled_gallery, card, key):
    path = enrolled_gallery.path
    enrolled_gallery.close()
    with pytest.raises(GalleryKeyError, match="created with another key"):
        Gallery.open(path, card, os.urandom(32))
    other = dataclasses.replace(card, name="mobilefacenet-tflite", sha256="1" * 64)
    with pytest.raises(GalleryModelError) as err:
        Gallery.open(path, other, key)
    message = str(err.value)
    assert "'sface'" in message and "'mobilefacenet-tflite'" in message and "re-enrol" in message
    with Gallery.open(path, card, key) as gallery:
        assert len(gallery) == N_ENROLLED


def test_moved_template_fails_authentication(lfw, card, tmp_path, key):
    path = tmp_path / "g.db"
    a, b = lfw["enrolled"][:2]
    with Gallery.create(path, card, key) as gallery:
        gallery.enroll(a, lfw["emb"][(a, 1)], "photo")
        gallery.enroll(b, lfw["emb"][(b, 1)], "photo")
        blob = gallery._conn.execute("SELECT blob FROM templates WHERE id = 1").fetchone()[0]
        assert lfw["emb"][(a, 1)].astype("<f4").tobytes() not in blob  # encrypted at rest
    with sqlite3.connect(path) as conn:  # an attacker gives b's row a's template
        conn.execute("UPDATE templates SET blob = ? WHERE id = 2", (blob,))
    with pytest.raises(GalleryError, match="fails authentication"):
        Gallery.open(path, card, key)


def test_thumbnails_only_when_asked(lfw, card, tmp_path, key):
    person = lfw["enrolled"][0]
    crop = lfw["crops"][(person, 1)]
    with Gallery.create(tmp_path / "plain.db", card, key) as gallery:
        with pytest.raises(GalleryError, match="without thumbnails"):
            gallery.enroll(person, lfw["emb"][(person, 1)], "photo", thumbnails=[crop])
        gallery.enroll(person, lfw["emb"][(person, 1)], "photo")
        assert gallery.thumbnails_of(person) == []
    with Gallery.create(tmp_path / "thumbs.db", card, key, thumbnails=True) as gallery:
        gallery.enroll(person, lfw["emb"][(person, 1)], "photo", thumbnails=[crop])
        (back,) = gallery.thumbnails_of(person)
        assert np.array_equal(back, crop)


# ---- keys ---------------------------------------------------------------------------------
def test_key_file_created_private_and_world_readable_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "gallery.key"
    key = load_key(path)
    assert len(key) == 32 and (path.stat().st_mode & 0o777) == 0o600 and load_key(path) == key
    path.chmod(0o644)
    with pytest.raises(GalleryKeyError, match="chmod 600"):
        load_key(path)
    with pytest.raises(GalleryKeyError, match="does not exist"):
        load_key(tmp_path / "missing.key", create=False)


def test_key_from_environment(tmp_path):
    raw = os.urandom(32)
    assert load_key(environ={KEY_ENV: base64.b64encode(raw).decode()}) == raw
    with pytest.raises(GalleryKeyError, match="32 bytes"):
        load_key(environ={KEY_ENV: base64.b64encode(b"short").decode()})
    with pytest.raises(GalleryKeyError, match="base64"):
        load_key(environ={KEY_ENV: "not base64!"})
    with pytest.raises(GalleryKeyError, match="two gallery keys"):
        load_key(tmp_path / "k", environ={KEY_ENV: base64.b64encode(raw).decode()})
    with pytest.raises(GalleryKeyError, match="no gallery key"):
        load_key(environ={})


# ---- quality gate -------------------------------------------------------------------------
def test_quality_gate_says_why(lfw):
    person = lfw["enrolled"][0]
    image = read_image(lfw["raw"][(person, 1)])
    detector, config, face = lfw["detector"], QualityConfig(), lfw["faces"][(person, 1)]
    good = check_crop(check_face(face.box, face.landmarks, config), lfw["crops"][(person, 1)], config)
    assert good.ok and good.sharpness > config.min_sharpness
    small = cv2.resize(image, None, fx=0.3, fy=0.3, interpolation=cv2.INTER_AREA)
    tiny = _central_face(detector.detect(small), small.shape)
    assert check_face(tiny.box, tiny.landmarks, config).reason == TOO_SMALL
    # Turn the real landmarks about their centre: YuNet's landmarks on a rotated photo drift
    # back toward upright, which would test the detector rather than the gate.
    centre = face.landmarks.mean(axis=0)
    turn = cv2.getRotationMatrix2D(tuple(float(v) for v in centre), 45, 1.0)
    tilted = np.c_[face.landmarks, np.ones(5)] @ turn.T
    report = check_face(face.box, tilted, config)
    assert report.reason == POSE and "roll" in report.detail and abs(report.roll_deg) > 40
    sideways = face.landmarks.copy()
    sideways[2, 0] += 0.8 * np.linalg.norm(face.landmarks[1] - face.landmarks[0])  # nose far off
    assert check_face(face.box, sideways, config).reason == POSE
    blurred = cv2.GaussianBlur(lfw["crops"][(person, 1)], (0, 0), 4)
    report = check_crop(check_face(face.box, face.landmarks, config), blurred, config)
    assert report.reason == BLURRY and "sharpness" in report.detail


# ---- door loop, sources, audit ------------------------------------------------------------
def test_station_over_folder_skips_corrupt_and_audits(lfw, card, enrolled_gallery, tmp_path,
                                                      caplog):
    folder = tmp_path / "frames"
    folder.mkdir()
    genuine = [(p, 2) for p in lfw["enrolled"][:4] if (p, 2) in lfw["emb"]]
    frames = genuine + [(p, 1) for p in lfw["strangers"][:4]]
    for i, key in enumerate(frames):
        (folder / f"{i:03d}.jpg").write_bytes(lfw["raw"][key])
    (folder / "002b.jpg").write_bytes(lfw["raw"][frames[0]][:900])  # truncated JPEG
    audit = AuditLog(tmp_path / "audit" / "audit.jsonl")
    station = Station(enrolled_gallery, lfw["model"], lfw["detector"], Decider(card, far=FAR),
                      audit=audit)
    with caplog.at_level(logging.WARNING, logger="edge.access.sources"):
        source = open_source(folder)
        summary = station.run(source, output_video=tmp_path / "out.avi")
    audit.close()
    assert isinstance(source, FolderSource) and [p.name for p in source.skipped] == ["002b.jpg"]
    assert any("002b.jpg" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)
    assert summary.frames == len(frames) and summary.faces >= len(frames)
    records = [json.loads(line) for line in audit.path.read_text().splitlines()]
    assert len(records) == summary.faces
    assert {"time", "person", "score", "threshold", "far", "model_sha256", "latency_ms", "frame",
            "source", "reason"} <= set(records[0])
    assert all(r["model_sha256"] == card.sha256 and r["far"] == FAR for r in records)
    admitted = {r["person"] for r in records if r["admitted"]}
    assert admitted <= {p for p, _ in genuine} and len(admitted) >= len(genuine) - 1
    with open_source(tmp_path / "out.avi") as video:  # the annotated video: one frame each
        assert len(list(video)) == len(frames)


def test_video_file_source(lfw, tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (250, 250))
    for person in lfw["enrolled"][:3]:
        writer.write(read_image(lfw["raw"][(person, 1)]))
    writer.release()
    with open_source(str(path)) as source:
        frames = list(source)
    assert [f.index for f in frames] == [0, 1, 2] and frames[0].image.shape == (250, 250, 3)


def test_audit_log_rotates_and_lines_are_json(tmp_path, card):
    log_path = tmp_path / "audit.jsonl"
    decision = Decision("Alice", 0.71234, 0.33, FAR, 0.2, MATCH, "Alice", "ok")
    with AuditLog(log_path, max_bytes=2048, keep=2) as audit:
        for i in range(60):
            audit.write(decision, AuditContext(card.name, card.sha256, 12.5, i, "camera:0"))
        files = audit.files()
    assert [p.name for p in files] == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    frames = []
    for path in reversed(files):  # oldest file first
        assert path.stat().st_size <= 2048
        for line in path.read_text().splitlines():
            record = json.loads(line)
            frames.append(record["frame"])
            assert record["person"] == "Alice" and record["time"].endswith("+00:00")
    # Consecutive and ending with the last line: nothing lost inside the kept window, and the
    # oldest lines were rotated away.
    assert frames == list(range(60 - len(frames), 60)) and frames[0] > 0
