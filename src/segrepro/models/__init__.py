"""Models: the six published methods, key-for-key with their official code, built by name."""

from segrepro.models.card import MethodCard, Protocol
from segrepro.models.outputs import MAIN_ONLY, SegOutput, main_logits
from segrepro.models.registry import build, get_card, get_spec, list_methods, list_variants, register, register_card

__all__ = [
    "MAIN_ONLY",
    "MethodCard",
    "Protocol",
    "SegOutput",
    "build",
    "get_card",
    "get_spec",
    "list_methods",
    "list_variants",
    "main_logits",
    "register",
    "register_card",
]
