"""The ``segrepro`` command line. Each command is a thin call into a stage function of its layer.

The same stage names are used by the DVC stages (dvc.yaml) and the Kubeflow components.
User errors (:class:`segrepro.errors.UserError`) become one line on stderr and a non-zero exit.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from segrepro.errors import UserError

app = typer.Typer(
    name="segrepro",
    help="Reproduce, evaluate and compare semantic-segmentation methods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Synthetic datasets and dataset preparation.", no_args_is_help=True)
checkpoint_app = typer.Typer(help="Official checkpoint conversion.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks whose figures go to docs/benchmarks.md.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(checkpoint_app, name="checkpoint")
app.add_typer(bench_app, name="bench")


# --- data ---------------------------------------------------------------------------------------
# (filled by the data layer)


# --- models / checkpoint ------------------------------------------------------------------------
# (filled by the models layer)


# --- bench --------------------------------------------------------------------------------------
# (one subcommand per layer: data, models, train, eval)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point: run the app, turning user errors into one clean line."""
    try:
        app(args=argv, prog_name="segrepro")
    except UserError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
