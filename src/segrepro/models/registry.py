"""Build models by name (timm-style): ``build("ann", variant="r101", num_classes=19)``.

Each method module registers one builder per variant with :func:`register`. The builder takes plain
constructor arguments and returns the randomly initialised model; the mapping from a method/variant name
to those arguments lives only here and in the method's own module. Loading a pretrained backbone file is
the same for every builder but for the file layout, so the registration names that layout
(``pretrained_source``) and :func:`build` does the loading once, for all methods. Each method module
also registers its :class:`~segrepro.models.card.MethodCard` (:func:`register_card`, :func:`get_card`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from segrepro.errors import UserError
from segrepro.models.card import MethodCard
from segrepro.models.pretrained import load_backbone

METHOD_MODULES: tuple[str, ...] = ("alignseg", "acfnet", "gald", "dgcnet", "ann", "alignseg_ssl")


@dataclass(frozen=True)
class VariantSpec:
    """One registered (method, variant): its builder and the facts the rest of the pipeline needs."""

    method: str
    variant: str
    builder: Callable[..., nn.Module]
    default_num_classes: int
    pretrained_source: str
    description: str = ""


_REGISTRY: dict[str, dict[str, VariantSpec]] = {}
_DEFAULT_VARIANT: dict[str, str] = {}
_CARDS: dict[str, MethodCard] = {}


def register_card(card: MethodCard) -> MethodCard:
    """Register ``card`` as the facts of ``card.method`` (one card per method; its builders come separately)."""
    _CARDS[card.method] = card
    return card


def get_card(method: str) -> MethodCard:
    method = _check_method(method)
    if method not in _CARDS:
        raise UserError(
            f"method {method!r} registers builders but no method card; add register_card(...) "
            "to its module (docs/adding-a-method.md)"
        )
    return _CARDS[method]


def register(
    method: str,
    variant: str,
    *,
    pretrained_source: str,
    default: bool = False,
    num_classes: int = 19,
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder(num_classes=..., **kwargs) -> nn.Module`` (random init).

    ``pretrained_source`` is the :func:`~segrepro.models.pretrained.load_backbone` source (file layout)
    that :func:`build` reads a ``pretrained`` file with, so builders never load weights themselves.
    """

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY.setdefault(method, {})[variant] = VariantSpec(
            method, variant, builder, num_classes, pretrained_source, description
        )
        if default:
            _DEFAULT_VARIANT[method] = variant
        return builder

    return deco


def _load_all() -> None:
    """Import every method module; one that is not present yet is skipped, any other error surfaces."""
    for name in METHOD_MODULES:
        module = f"segrepro.models.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:
                raise


def list_methods() -> list[str]:
    """The shipped methods first (their order), then any registered elsewhere (e.g. by a test)."""
    _load_all()
    return [m for m in METHOD_MODULES if m in _REGISTRY] + [m for m in _REGISTRY if m not in METHOD_MODULES]


def list_variants(method: str) -> list[str]:
    return list(_REGISTRY[_check_method(method)])


def _check_method(method: str) -> str:
    _load_all()
    if method not in _REGISTRY:
        raise UserError(f"unknown method {method!r}; choose one of: {', '.join(list_methods())}")
    return method


def get_spec(method: str, variant: str | None = None) -> VariantSpec:
    method = _check_method(method)
    variant = variant or _DEFAULT_VARIANT[method]
    variants = _REGISTRY[method]
    if variant not in variants:
        raise UserError(f"unknown variant {variant!r} for {method}; choose one of: {', '.join(variants)}")
    return variants[variant]


def build(
    method: str, num_classes: int | None = None, variant: str | None = None, pretrained: str | None = None, **kwargs
) -> nn.Module:
    """Build ``method``/``variant``. ``pretrained`` is a local backbone file (never downloaded), read in the
    variant's ``pretrained_source`` layout; ``kwargs`` go to the builder."""
    spec = get_spec(method, variant)
    model = spec.builder(num_classes=num_classes or spec.default_num_classes, **kwargs)
    if pretrained is not None:
        load_backbone(model, pretrained, source=spec.pretrained_source)
    return model
