"""The model registry of distill/, built on the kit's one registry helper (edge.registry)."""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from edge.registry import Registry, UnknownNameError

T = TypeVar("T")
__all__ = ["MODELS", "Registry", "UnknownNameError", "create_model", "list_models", "register_model"]


MODELS: Registry[Callable[..., Any]] = Registry("model")


def register_model(name: str | None = None) -> Callable[[T], T]:
    """Decorator registering a model builder in ``MODELS`` (see ``Registry.register``)."""
    return MODELS.register(name)


def create_model(name: str, **kwargs: Any) -> Any:
    """Build the registered model ``name`` with ``kwargs``.

    Raises:
        UnknownNameError: ``name`` is not registered; the message lists the known models.
    """
    _load_builtin_models()
    return MODELS.create(name, **kwargs)


def list_models() -> list[str]:
    """Return the names of all registered models, sorted."""
    _load_builtin_models()
    return MODELS.names()


def _load_builtin_models() -> None:
    # The builders register themselves when distill.models is imported; importing it here
    # means `from distill.registry import create_model` works without a second import line.
    import distill.models  # noqa: F401
