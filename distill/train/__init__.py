"""Template-level distillation training (MaskInv): config, engine, DDP, checkpoints, plots.

``from distill.train.main import main`` runs a configuration; see ``distill/configs/``.
"""
