"""Build ``segrepro`` command lines from the click command behind the typer CLI.

Components never spell option names by hand: they name the command path and the Python parameter
names of the typer function, and the option strings come from the CLI definition itself. A renamed
or removed option therefore fails at import time instead of at run time on the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import typer.main

# typer vendors its own click (typer._click), so commands are recognised by shape, not by class.
Command = Any


def _subcommands(cmd: Command) -> dict[str, Command] | None:
    return getattr(cmd, "commands", None)


def root_command() -> Command:
    """The click group ``segrepro`` runs (the same object the console script builds)."""
    from segrepro.cli import app

    return typer.main.get_command(app)


def find_command(path: Sequence[str]) -> Command:
    """The click command at ``path`` (e.g. ``["data", "prepare"]``); KeyError names a missing one."""
    cmd = root_command()
    for name in path:
        subs = _subcommands(cmd)
        if subs is None or name not in subs:
            raise KeyError(f"segrepro has no command {' '.join(path)!r} (missing {name!r})")
        cmd = subs[name]
    return cmd


def segrepro_args(path: Sequence[str], *arguments: Any, **options: Any) -> list[Any]:
    """``[segrepro, *path, *arguments, --opt value, ...]`` for the command at ``path``.

    ``options`` are keyed by the typer function's parameter names. Values may be kfp placeholders
    (kept as objects so kfp can render them); ``None`` skips an option, a bool picks the flag or
    its ``--no-`` twin, a list repeats a multiple option.
    """
    cmd = find_command(path)
    params = {p.name: p for p in cmd.params if p.param_type_name == "option"}
    positional = [p for p in cmd.params if p.param_type_name == "argument"]
    if len(arguments) > len(positional):
        raise ValueError(f"segrepro {' '.join(path)} takes {len(positional)} arguments, got {len(arguments)}")
    argv: list[Any] = ["segrepro", *path, *arguments]
    for name, value in options.items():
        if name not in params:
            raise KeyError(f"segrepro {' '.join(path)} has no option for parameter {name!r}")
        opt = params[name]
        if value is None:
            continue
        if opt.is_flag:
            if not isinstance(value, bool):
                raise TypeError(f"{opt.opts[0]} is a flag: pass True/False")
            if value:
                argv.append(opt.opts[0])
            elif opt.secondary_opts:
                argv.append(opt.secondary_opts[0])
        elif opt.multiple:
            for item in value:
                argv += [opt.opts[0], item]
        else:
            argv += [opt.opts[0], value]
    return argv


def validate_argv(argv: Sequence[str]) -> Any:
    """Parse a rendered ``segrepro ...`` argv with the real click command; returns its context.

    Raises click's UsageError (or ValueError) when the line would not run.
    """
    if not argv or argv[0] != "segrepro":
        raise ValueError(f"not a segrepro invocation: {list(argv)[:3]}")
    cmd = root_command()
    rest = list(argv[1:])
    while (subs := _subcommands(cmd)) is not None:
        if not rest or rest[0] not in subs:
            raise ValueError(f"unknown segrepro command in {list(argv)}")
        cmd = subs[rest.pop(0)]
    return cmd.make_context("segrepro", rest)
