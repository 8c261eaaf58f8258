"""User-facing errors: the CLI prints them as one line and exits non-zero, never with a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix (bad path, bad dataset, missing weights).

    ``exit_code`` lets stages pick a distinct status (dataset validation uses 2). ``same_on_every_rank``
    marks an error every process of a DDP job raises identically (decided from all-reduced values), so only
    rank 0 prints it.
    """

    exit_code: int = 1
    same_on_every_rank: bool = False

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class DatasetError(UserError):
    """A dataset on disk does not match its official layout; ``problems`` holds one line per file."""

    exit_code = 2

    def __init__(self, problems: list[str], limit: int = 20) -> None:
        self.problems = problems
        shown = problems[:limit]
        extra = len(problems) - len(shown)
        text = "\n".join(shown) + (f"\n... and {extra} more problem(s)" if extra > 0 else "")
        super().__init__(text)


class MissingWeightsError(UserError):
    """Pretrained weights are not at the local path; says what to fetch and where to put it."""


class RecipeError(UserError):
    """A bad params.yaml / ``--set`` key or value, or a run config that does not match: exit 2, before any work."""

    exit_code = 2


class MissingExtraError(UserError):
    """An optional dependency group is not installed; names the ``pip install`` that brings it (exit 2)."""

    exit_code = 2


def require_extra(extra: str, purpose: str, *modules: str, alternative: str = "") -> None:
    """Raise :class:`MissingExtraError` naming ``segrepro[<extra>]`` (and ``alternative``) unless ``modules`` are
    installed: the tracking and pipeline libraries are optional extras, checked before any work starts."""
    from importlib.util import find_spec

    for name in modules:
        try:
            missing = find_spec(name) is None
        except (ImportError, ValueError):  # a missing parent package, or a module blocked in sys.modules
            missing = True
        if missing:
            raise MissingExtraError(
                f"{purpose} needs {name}, which is not installed; install it with pip install 'segrepro[{extra}]'"
                + (f" or {alternative}" if alternative else "")
            )
