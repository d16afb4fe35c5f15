"""Loss and accuracy curves of a run, from its metrics.jsonl (matplotlib Agg, PNG)."""

from __future__ import annotations

import json
import os
from pathlib import Path

SETS = ("U-U", "U-M", "M-M")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics.jsonl file (empty if it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_plots(rows: list[dict], folder: str | os.PathLike) -> list[Path]:
    """Write ``loss.png`` (train steps, validation per epoch) and, when evaluated,
    ``accuracy.png`` (quick masked-LFW accuracy per epoch). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    steps = [r for r in rows if r.get("kind") == "step"]
    epochs = [r for r in rows if r.get("kind") == "epoch"]
    written = []
    if steps or epochs:
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        ax[0].plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, label="train")
        ax[0].plot([r["step"] for r in epochs], [r["val_loss"] for r in epochs], "o-", label="validation")
        ax[0].set(xlabel="step", ylabel="loss", title="loss")
        ax[1].plot([r["step"] for r in steps], [r["cos"] for r in steps], lw=0.8, label="train")
        for key, label in (("val_cos_masked", "val masked"), ("val_cos_unmasked", "val unmasked")):
            pts = [(r["step"], r[key]) for r in epochs if key in r]
            if pts:
                ax[1].plot(*zip(*pts), "o-", label=label)
        ax[1].set(xlabel="step", ylabel="cos(student, teacher)", title="agreement with the teacher")
        for a in ax:
            a.grid(alpha=0.3)
            a.legend(fontsize=8)
        written.append(_save(fig, folder / "loss.png"))
    evaluated = [r for r in rows if r.get("kind") in ("initial", "epoch") and r.get("eval")]
    if evaluated:
        fig, ax = plt.subplots(figsize=(4.5, 3.2))
        for name in SETS:
            pts = [(r["epoch"] + 1, 100 * r["eval"][name]) for r in evaluated if name in r["eval"]]
            if pts:
                ax.plot(*zip(*pts), "o-", label=name)
        ax.set(xlabel="epoch (0: initial weights)", ylabel="accuracy (%)",
               title="masked LFW, after each epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, folder / "accuracy.png"))
    return written


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
    return path
