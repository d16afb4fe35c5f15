"""Distillation losses and margin heads, in one ``LOSSES`` registry.

Every term has the signature ``term(student, teacher, labels) -> scalar``:

- ``kd_mse``: template KD (MaskInv): squared distance between the L2-normalised student
  embedding and the teacher template, summed over dimensions, averaged over the batch
  (``= 2 - 2 cos``, so its scale does not depend on the embedding size);
- ``kd_cosine``: ``1 - cos`` between the two;
- ``arcface`` (Deng et al., 2019), ``elastic_arc`` / ``elastic_cos`` (ElasticFace, Boutros
  et al., 2022; ``plus: true`` gives the "+" variants): margin-softmax heads over identity
  labels, which own a learnable class-centre matrix (``num_classes`` x ``embedding_size``).

``DistillLoss`` sums the configured terms with their weights and reports each one.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from distill.registry import Registry
from edge.errors import ConfigError

LOSSES: Registry[Callable[..., nn.Module]] = Registry("loss")


class TemplateMSE(nn.Module):
    """Squared L2 distance between normalised student and teacher embeddings."""

    needs_labels = False

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        diff = F.normalize(student, dim=1) - F.normalize(teacher, dim=1)
        return diff.pow(2).sum(dim=1).mean()


class TemplateCosine(nn.Module):
    """``1 - cos(student, teacher)``, averaged over the batch."""

    needs_labels = False

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()


class MarginHead(nn.Module):
    """Cosine classifier with an additive margin on the target class, then cross-entropy.

    Subclasses implement ``_target_logit(cos_target)`` on the (clamped) target cosine.

    Args:
        embedding_size: student embedding dimension.
        num_classes: number of training identities.
        scale: logit scale ``s``.
        margin: mean margin ``m``.
    """

    needs_labels = True

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0,
                 margin: float = 0.5) -> None:
        super().__init__()
        if num_classes < 2:
            raise ConfigError(f"a margin head needs identity labels of >= 2 classes, got "
                              f"{num_classes}: use an identity-labelled training set (LFW folds)")
        self.scale, self.margin = float(scale), float(margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.normal_(self.weight, std=0.01)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor | None,
                labels: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(student, dim=1), F.normalize(self.weight, dim=1))
        cos = cos.clamp(-1.0 + 1e-7, 1.0 - 1e-7)
        target = cos.gather(1, labels[:, None]).squeeze(1)
        logits = cos.scatter(1, labels[:, None], self._target_logit(target)[:, None])
        return F.cross_entropy(logits * self.scale, labels)

    def _margins(self, target: torch.Tensor) -> torch.Tensor:
        return torch.full_like(target, self.margin)

    def _target_logit(self, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


def _additive_angular(target: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """``cos(theta + m)``; past ``theta + m = pi`` it would rise again, so there the linear
    fallback ``cos(theta) - m sin(m)`` keeps the logit decreasing (insightface's rule)."""
    theta = torch.acos(target)
    return torch.where(theta + margins <= math.pi, torch.cos(theta + margins),
                       target - margins * torch.sin(margins))


class ArcFace(MarginHead):
    """ArcFace: ``cos(theta + m)`` on the target class."""

    def _target_logit(self, target: torch.Tensor) -> torch.Tensor:
        return _additive_angular(target, self._margins(target))


class _Elastic(MarginHead):
    """ElasticFace: the margin of each sample is drawn from ``N(m, std)``; with ``plus`` the
    drawn margins are sorted so that samples closer to their class centre get smaller ones."""

    def __init__(self, embedding_size: int, num_classes: int, scale: float = 64.0,
                 margin: float = 0.5, std: float = 0.05, plus: bool = False) -> None:
        super().__init__(embedding_size, num_classes, scale, margin)
        if std < 0:
            raise ConfigError(f"elastic margin std must be >= 0, got {std}")
        self.std, self.plus = float(std), bool(plus)

    def _margins(self, target: torch.Tensor) -> torch.Tensor:
        margins = torch.normal(self.margin, self.std, size=target.shape, device=target.device)
        if self.plus:
            with torch.no_grad():
                order = torch.argsort(target.detach(), descending=True)
                ranked = torch.sort(margins).values
                margins = torch.empty_like(margins).scatter_(0, order, ranked)
        return margins


class ElasticArc(_Elastic):
    """ElasticFace-Arc: ``cos(theta + m_i)``, ``m_i ~ N(m, std)``."""

    def _target_logit(self, target: torch.Tensor) -> torch.Tensor:
        return _additive_angular(target, self._margins(target))


class ElasticCos(_Elastic):
    """ElasticFace-Cos: ``cos(theta) - m_i``, ``m_i ~ N(m, std)``."""

    def _target_logit(self, target: torch.Tensor) -> torch.Tensor:
        return target - self._margins(target)


@LOSSES.register("kd_mse")
def kd_mse(embedding_size: int, num_classes: int) -> nn.Module:
    """Template KD, squared distance of normalised embeddings (no parameters)."""
    return TemplateMSE()


@LOSSES.register("kd_cosine")
def kd_cosine(embedding_size: int, num_classes: int) -> nn.Module:
    """Template KD, ``1 - cos`` (no parameters)."""
    return TemplateCosine()


@LOSSES.register("arcface")
def arcface(embedding_size: int, num_classes: int, scale: float = 64.0,
            margin: float = 0.5) -> nn.Module:
    """ArcFace head (s=64, m=0.5 as published)."""
    return ArcFace(embedding_size, num_classes, scale, margin)


@LOSSES.register("elastic_arc")
def elastic_arc(embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.5,
                std: float = 0.05, plus: bool = False) -> nn.Module:
    """ElasticFace-Arc head (s=64, m=0.5, std=0.05 as published)."""
    return ElasticArc(embedding_size, num_classes, scale, margin, std, plus)


@LOSSES.register("elastic_cos")
def elastic_cos(embedding_size: int, num_classes: int, scale: float = 64.0, margin: float = 0.35,
                std: float = 0.05, plus: bool = False) -> nn.Module:
    """ElasticFace-Cos head (s=64, m=0.35, std=0.05 as published)."""
    return ElasticCos(embedding_size, num_classes, scale, margin, std, plus)


def loss_params(name: str) -> list[str]:
    """The configurable parameters of loss ``name`` (besides the sizes the trainer passes)."""
    signature = inspect.signature(LOSSES.get(name))
    return [p for p in signature.parameters if p not in ("embedding_size", "num_classes")]


class DistillLoss(nn.Module):
    """Weighted sum of registered loss terms.

    Args:
        terms: ``(name, weight, params)`` triples; ``params`` go to the term's builder.
        embedding_size: student embedding size (margin heads).
        num_classes: training identities (margin heads; 0 for unlabelled data).

    Raises:
        UnknownNameError: unknown term name. ConfigError: bad parameters, a negative weight,
            or a margin head without identity labels.
    """

    def __init__(self, terms: list[tuple[str, float, dict[str, Any]]], embedding_size: int,
                 num_classes: int = 0) -> None:
        super().__init__()
        if not terms:
            raise ConfigError(f"losses is empty: give at least one of {', '.join(LOSSES.names())}")
        self.weights: dict[str, float] = {}
        self.terms = nn.ModuleDict()
        for name, weight, params in terms:
            builder = LOSSES.get(name)
            unknown = sorted(set(params) - set(loss_params(name)))
            if unknown:
                raise ConfigError(f"loss {name!r}: unknown parameter(s) {unknown}; valid: "
                                  f"{', '.join(loss_params(name)) or '(none)'}")
            if weight < 0 or not math.isfinite(weight):
                raise ConfigError(f"loss {name!r}: weight must be a finite number >= 0, got {weight}")
            self.terms[name] = builder(embedding_size=embedding_size, num_classes=num_classes, **params)
            self.weights[name] = float(weight)

    @property
    def needs_labels(self) -> bool:
        """Whether any term is a margin head."""
        return any(t.needs_labels for t in self.terms.values())

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                labels: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(total, {name: unweighted term})``."""
        parts = {name: term(student, teacher, labels) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        return total, parts
