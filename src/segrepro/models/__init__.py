"""Models: the six published methods, key-for-key with their official code, built by name."""

from segrepro.models.outputs import SegOutput
from segrepro.models.registry import build, get_spec, list_methods, list_variants, register

__all__ = ["SegOutput", "build", "get_spec", "list_methods", "list_variants", "register"]
