"""Models: the six published methods, key-for-key with their official code, built by name."""

from segrepro.models.card import MethodCard, Protocol
from segrepro.models.outputs import SegOutput
from segrepro.models.registry import build, get_card, get_spec, list_methods, list_variants, register, register_card

__all__ = ["MethodCard", "Protocol", "SegOutput", "build", "get_card", "get_spec", "list_methods", "list_variants",
           "register", "register_card"]
