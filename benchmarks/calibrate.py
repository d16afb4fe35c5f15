"""Store thresholds calibrated by an evaluation in a model's card.

The door decides at a target false-accept rate, not at a raw cosine. Each FAR's threshold
is the strictest over the U-U, U-M and M-M impostor sets, so the rate holds whether the
probe, the gallery photo or both wear a mask.
"""

from __future__ import annotations

import dataclasses
import json
import logging

from benchmarks.embedders import Embedder
from benchmarks.evaluate import FARS, SETS
from benchmarks.packs import Pack
from edge.card import Threshold, card_path
from edge.errors import ConfigError

log = logging.getLogger(__name__)


def thresholds_from(results: dict, pack: Pack) -> tuple[Threshold, ...]:
    """One threshold per FAR: the highest over the evaluated sets."""
    sets = [s for s in SETS if s in results and "tar_at_far" in results[s]]
    if not sets:
        raise ConfigError("no all-vs-all results to calibrate from: run a full (not quick) evaluation")
    out = []
    for far in FARS:
        key = f"{far:g}"
        worst = max(sets, key=lambda s: results[s]["tar_at_far"][key]["threshold"])
        point = results[worst]["tar_at_far"][key]
        data = (f"{pack.name} pack {pack.key}: strictest of {'/'.join(sets)} all-vs-all impostors "
                f"({worst} decides; {results[worst]['n_impostor']:,} pairs)")
        out.append(Threshold(far=far, cosine=round(point["threshold"], 6), data=data,
                             tar=round(point["tar"], 6)))
    return tuple(out)


def accuracy_from(results: dict, pack: Pack) -> dict:
    """The card's accuracy block: 10-fold accuracy and TAR@1e-3 per set."""
    return {pack.name: {s: {"accuracy": results[s]["accuracy"], "accuracy_std": results[s]["accuracy_std"],
                            "tar_at_far_1e-3": results[s].get("tar_at_far", {}).get("0.001", {}).get("tar")}
                        for s in SETS if s in results} | {"pack": pack.key}}


def write_thresholds(embedder: Embedder, results: dict, pack: Pack) -> str:
    """Update the card beside the model file (and a zoo model's card template).

    Raises:
        ConfigError: the model has no card (a PyTorch checkpoint: export it first).
    """
    if embedder.card is None or embedder.path is None:
        raise ConfigError("only carded model files can be calibrated: export the checkpoint "
                          "(`main.py export`) and evaluate the exported file with --write-card")
    # Merged, not replaced: the export's parity figures and other packs' results stay.
    accuracy = {**(embedder.card.accuracy or {}), **accuracy_from(results, pack)}
    card = dataclasses.replace(embedder.card, thresholds=thresholds_from(results, pack),
                               accuracy=accuracy)
    card.save(card_path(embedder.path))
    written = [str(card_path(embedder.path))]
    template = _zoo_template(embedder.card.name)
    if template is not None and template.exists():
        raw = json.loads(template.read_text())
        raw["thresholds"] = [dataclasses.asdict(t) for t in card.thresholds]
        raw["accuracy"] = card.accuracy
        template.write_text(json.dumps(raw, indent=2) + "\n")
        written.append(str(template))
    return "calibrated " + ", ".join(f"FAR {t.far:g}: {t.cosine:.4f}" for t in card.thresholds) + \
        " -> " + ", ".join(written)


def _zoo_template(name: str):
    from edge.zoo import CARDS, ZOO

    entry = ZOO.get(name)
    return CARDS / entry.card if entry else None
