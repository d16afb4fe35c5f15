"""MaskEdge training side: models, losses, data and distillation (imports torch).

Never imports ``quantize`` or the ``edge`` runtimes; only the shared, torch-free
``edge.errors`` hierarchy.
"""

from distill.registry import Registry, create_model, list_models, register_model

__all__ = ["Registry", "create_model", "list_models", "register_model"]
