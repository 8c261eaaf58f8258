"""Kubeflow components, one per stage, named like the CLI subcommands and DVC stages.

Two builds share one signature per stage: :func:`segrepro_components.container.container_components`
(the segrepro image running the CLI, for clusters) and :data:`segrepro_components.local.LOCAL` (Python
components calling ``segrepro.stages``, for ``kfp.local.SubprocessRunner``, which refuses
container components). ``segrepro_pipelines.cityscapes_benchmark.build_graph`` takes either.
"""

from __future__ import annotations

from typing import Any, NamedTuple

STAGES = ("prepare", "train", "evaluate", "submit", "collect", "leaderboard")

# Where a prepared Dataset artifact (one dataset) keeps the dataset root; its `_prepared` sibling sits beside
# it, the layout `segrepro data prepare` and `segrepro train` agree on (data.validate.default_prepared_dir).
DATASET_SUBDIR = "root"
# The plain final state_dict inside a Model artifact (a `segrepro train --out` run folder).
MODEL_FILE = "model.pt"
# The image the README builds; every task gets the `image` pipeline parameter via set_container_image.
DEFAULT_IMAGE = "ghcr.io/segrepro/segrepro:0.1.0"


class StageComponents(NamedTuple):
    """The stage components of one build (container or local), same signatures. ``collect`` adds one
    evaluated run to the runs folder the leaderboard reads (a chain of cheap steps: kfp cannot fan in
    artifacts of tasks outside a ParallelFor)."""

    prepare: Any
    train: Any
    evaluate: Any
    submit: Any
    collect: Any
    leaderboard: Any
