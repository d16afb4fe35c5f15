"""Make a distillation checkpoint from the real pretrained MobileFaceNet.tflite.

    python -m distill.models.pretrained OUT.pt [--tflite PATH]

The checkpoint holds ``mobilefacenet_tf`` with the .tflite's weights in the layout of
``distill.train.checkpoint``, so ``init: checkpoint:OUT.pt`` starts masked KD from the
teacher's own weights, and ``main.py eval --model OUT.pt`` measures the initialisation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

TFLITE = "models/mobilefacenet-tflite/MobileFaceNet.tflite"


def write_init_checkpoint(out: Path, tflite: Path | None = None) -> Path:
    """Write the pretrained-student checkpoint to ``out`` and return it."""
    from distill.models.mobilefacenet_tf import EMBEDDING, load_tflite_weights
    from distill.registry import create_model
    from distill.train.checkpoint import save_checkpoint
    from edge.paths import data_file

    source = tflite or data_file(TFLITE)
    model = load_tflite_weights(create_model("mobilefacenet_tf"), str(source))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": model.state_dict(), "epoch": 0, "teacher": "mobilefacenet-tflite",
                     "student": {"name": "mobilefacenet_tf", "embedding_size": EMBEDDING,
                                 "input": {"color": "rgb", "mean": 127.5, "std": 127.5,
                                           "size": [112, 112]}}}, out)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tflite", type=Path, default=None)
    args = parser.parse_args()
    print(write_init_checkpoint(args.out, args.tflite))
