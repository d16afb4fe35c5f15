"""Model card: round trip, validation with clear errors, checksum at load."""

from __future__ import annotations

import json

import pytest

from edge.card import ModelCard, card_path, companion_hashes, sha256_file, verify_checksum
from edge.errors import ModelCardError, ModelFileError


def _card(tmp_path, **over):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model-bytes")
    raw = dict(name="m", architecture="test", file="m.onnx", sha256=sha256_file(model),
               format="onnx", precision="fp32", embedding_size=128,
               input={"size": [112, 112], "color": "rgb", "layout": "nchw"},
               thresholds=[{"far": 1e-3, "cosine": 0.4, "data": "LFW U-U"},
                           {"far": 1e-2, "cosine": 0.3, "data": "LFW U-U"}])
    raw.update(over)
    card_path(model).write_text(json.dumps(raw))
    return model


def test_round_trip(tmp_path):
    model = _card(tmp_path)
    card = ModelCard.load(card_path(model))
    card.save(tmp_path / "again.json")
    assert ModelCard.load(tmp_path / "again.json") == card
    assert card.input.size == (112, 112)
    verify_checksum(model, card)


def test_threshold_only_at_a_calibrated_far(tmp_path):
    card = ModelCard.load(card_path(_card(tmp_path)))
    assert card.threshold_at(1e-3).cosine == 0.4
    assert card.threshold_at(0.01).cosine == 0.3
    with pytest.raises(ModelCardError, match="choose one of: 0.001, 0.01"):
        card.threshold_at(2e-2)


@pytest.mark.parametrize(
    "override, words",
    [
        ({"precision": "int4"}, "valid values"),
        ({"input": {"color": "yuv"}}, "input.color"),
        ({"input": {"layout": "nc"}}, "input.layout"),
        ({"schema_version": 9}, "schema version 9"),
        ({"colour": "rgb"}, "unknown field"),
        ({"sha256": "abc"}, "sha256"),
        ({"thresholds": [{"far": 2, "cosine": 0.3, "data": "x"}]}, "far"),
    ],
)
def test_invalid_cards_name_the_field(tmp_path, override, words):
    model = _card(tmp_path, **override)
    with pytest.raises(ModelCardError, match=words):
        ModelCard.load(card_path(model))


def test_missing_required_field(tmp_path):
    model = _card(tmp_path)
    raw = json.loads(card_path(model).read_text())
    del raw["embedding_size"]
    card_path(model).write_text(json.dumps(raw))
    with pytest.raises(ModelCardError, match="embedding_size"):
        ModelCard.load(card_path(model))


def test_not_json_and_missing(tmp_path):
    model = _card(tmp_path)
    card_path(model).write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        ModelCard.load(card_path(model))
    with pytest.raises(ModelCardError, match="not found"):
        ModelCard.load(tmp_path / "nope.card.json")


def test_checksum_mismatch(tmp_path):
    model = _card(tmp_path)
    card = ModelCard.load(card_path(model))
    model.write_bytes(b"model-byt")  # truncated
    with pytest.raises(ModelFileError, match="does not match its card"):
        verify_checksum(model, card)


def test_openvino_weights_file_is_checked_too(tmp_path):
    xml, weights = tmp_path / "m.xml", tmp_path / "m.bin"
    xml.write_bytes(b"<net/>")
    weights.write_bytes(b"\x00" * 64)
    card = ModelCard(name="m", architecture="test", file="m.xml", sha256=sha256_file(xml), format="openvino",
                     precision="int8", embedding_size=128, companions=companion_hashes(xml))
    assert list(card.companions) == ["m.bin"]
    verify_checksum(xml, card)
    weights.write_bytes(b"\x01" + b"\x00" * 63)  # same size, one byte flipped
    with pytest.raises(ModelFileError, match="m.bin does not match its card"):
        verify_checksum(xml, card)
    weights.unlink()
    with pytest.raises(ModelFileError, match="m.bin is missing: it belongs beside m.xml"):
        verify_checksum(xml, card)
    assert companion_hashes(tmp_path / "m.onnx") == {}


def test_uncalibrated_card_says_how_to_calibrate(tmp_path):
    card = ModelCard.load(card_path(_card(tmp_path, thresholds=[])))
    with pytest.raises(ModelCardError, match="main.py eval"):
        card.threshold_at(1e-3)


def test_write_card_merges_accuracy_and_keeps_the_parity_figures(tmp_path):
    from types import SimpleNamespace

    from benchmarks.calibrate import write_thresholds

    model = _card(tmp_path, accuracy={"parity_vs_pytorch_fp32": {"mean": 0.9967, "min": 0.989}})
    card = ModelCard.load(card_path(model))
    point = {"tar": 0.9, "threshold": 0.5}
    result = {"accuracy": 0.96, "accuracy_std": 0.01, "n_impostor": 10,
              "tar_at_far": {"0.01": point, "0.001": point, "0.0001": point}}
    pack = SimpleNamespace(name="lfw-masked", key="abc")
    write_thresholds(SimpleNamespace(card=card, path=model), {"U-M": result}, pack)
    accuracy = ModelCard.load(card_path(model)).accuracy
    assert accuracy["parity_vs_pytorch_fp32"] == {"mean": 0.9967, "min": 0.989}
    assert accuracy["lfw-masked"]["U-M"]["accuracy"] == 0.96 and accuracy["lfw-masked"]["pack"] == "abc"
