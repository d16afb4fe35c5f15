"""Write an evaluation run folder: results.json, report.md, ROC and histogram plots and a
contact sheet of the pack's masked faces, so a person can look as well as read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from benchmarks.packs import Pack
from benchmarks.plots import plot_roc, plot_score_histograms

SHEET_IMAGES = 16


def write_run(folder: Path, results: dict, pack: Pack, model: dict, seconds: float) -> Path:
    """Write everything for one evaluation into ``folder``; returns the report path."""
    folder.mkdir(parents=True, exist_ok=True)
    sets = [k for k in results if k in ("U-U", "U-M", "M-M")]
    curves = {k: results[k].pop("_curves") for k in sets if "_curves" in results[k]}
    if curves:
        plot_roc({k: (c["far"], c["tar"]) for k, c in curves.items()}, folder / "roc.png",
                 title=f"{model['name']} on {pack.name}")
        plot_score_histograms({k: (c["genuine"], c["impostor"]) for k, c in curves.items()},
                              folder / "scores.png")
    _contact_sheet(pack, folder / "contact_sheet.png")
    record = {"model": model, "pack": {"name": pack.name, "key": pack.key, "seed": pack.manifest["seed"],
                                       "images": len(pack), "pairs": results.get("pairs")},
              "seconds": round(seconds, 1), "results": results}
    (folder / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    report = folder / "report.md"
    report.write_text(markdown(record, bool(curves)))
    return report


def markdown(record: dict, with_plots: bool) -> str:
    """The Markdown report of one results record."""
    model, pack, results = record["model"], record["pack"], record["results"]
    lines = [f"# {model['name']} on {pack['name']}", "",
             f"Model sha256 `{model['sha256'][:16]}`, runtime {model['runtime']}. Pack `{pack['key']}` "
             f"(seed {pack['seed']}, {pack['images']} images, {pack['pairs']} pairs). "
             f"Evaluated in {record['seconds']} s.", "", table(results), ""]
    if with_plots:
        lines += ["![ROC](roc.png)", "", "![scores](scores.png)", ""]
    lines += ["Masked faces of this pack (a sample):", "", "![contact sheet](contact_sheet.png)", ""]
    return "\n".join(lines)


def table(results: dict) -> str:
    """One row per set: 10-fold accuracy, AUC, EER and TAR at the three FARs."""
    head = "| set | 10-fold acc. (%) | AUC | EER (%) | TAR@1e-2 | TAR@1e-3 | TAR@1e-4 |"
    rows = [head, "|---|---|---|---|---|---|---|"]
    for name in ("U-U", "U-M", "M-M"):
        if name not in results:
            continue
        r = results[name]
        tar = r.get("tar_at_far", {})
        cells = [f"{100 * r['accuracy']:.2f} ± {100 * r['accuracy_std']:.2f}",
                 f"{r['auc']:.4f}" if "auc" in r else "-",
                 f"{100 * r['eer']:.2f}" if "eer" in r else "-"]
        cells += [f"{100 * tar[f]['tar']:.2f}" if f in tar else "-" for f in ("0.01", "0.001", "0.0001")]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _contact_sheet(pack: Pack, path: Path) -> None:
    import cv2

    from edge.masks import contact_sheet

    picks = np.linspace(0, len(pack) - 1, SHEET_IMAGES).astype(int)
    labels = [str(pack.manifest["per_image"][i].get("template")) for i in picks]
    sheet = contact_sheet([np.asarray(pack.masked[i]) for i in picks], labels, cols=8, tile_size=96)
    cv2.imwrite(str(path), sheet)
