"""Container components: the segrepro image running the CLI, one component per stage.

Every ``segrepro`` command line below comes from :func:`segrepro_components.cli_args.segrepro_args`, i.e.
from the click command itself. Where a stage needs two commands (fetch + prepare, collect +
leaderboard) they are joined into one ``sh -ec`` script whose inputs arrive as ``$0``/``$1``, so
no input value is ever spliced into shell text.
"""


import shlex
from collections.abc import Sequence
from typing import Any

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from segrepro_components import DATASET_SUBDIR, DEFAULT_IMAGE, MODEL_FILE, StageComponents
from segrepro_components.cli_args import segrepro_args
from segrepro_pipelines.data import TRAIN_FILES

COLLECT_DIR = "/tmp/segrepro-runs"
NO_RUNS = f"{COLLECT_DIR}/none"  # the first collect step's "previous": an empty folder


def shell_join(argv: Sequence[str]) -> str:
    """Quote an argv for ``sh``; tokens that use ``$0``/``$1`` stay double-quoted (expanded, not split)."""
    return " ".join(f'"{tok}"' if "$" in tok else shlex.quote(tok) for tok in argv)


def shell_script(*argvs: Sequence[str]) -> str:
    """``cmd1 && ... && exec cmdN``: the last command replaces the shell so its exit code is the task's."""
    parts = [shell_join(a) for a in argvs]
    return " && ".join(parts[:-1] + [f"exec {parts[-1]}"])


def _spec(command: list[Any]) -> dsl.ContainerSpec:
    return dsl.ContainerSpec(image=DEFAULT_IMAGE, command=command)


def container_components() -> StageComponents:
    """Build the container components (reads the CLI definition, so call it after imports)."""
    data_dir = f"$1/{DATASET_SUBDIR}"
    prepare_script = shell_script(
        segrepro_args(["pipeline", "fetch"], "$0/$2", data_dir),
        segrepro_args(["data", "prepare"], "$2", root=data_dir),
    )
    evaluate_script = shell_script(
        ["mkdir", "-p", "$2"],
        ["cp", *(f"$1/{name}" for name in TRAIN_FILES), "$2/"],
        segrepro_args(["evaluate"], method="$0", checkpoint=f"$1/{MODEL_FILE}", data=f"$3/{DATASET_SUBDIR}", out="$2/eval"),
    )
    collect_script = shell_script(  # $0 row, $1 this run, $2 the runs folder to write, $3 the previous one
        ["mkdir", "-p", "$2", NO_RUNS],
        ["cp", "-R", "$3/.", "$2/"],
        ["cp", "-R", "$1", "$2/$0"],
    )
    leaderboard_script = shell_script(
        segrepro_args(["leaderboard"], runs="$0", out=f"{COLLECT_DIR}/board"),
        ["cp", f"{COLLECT_DIR}/board/leaderboard.md", "$1"],
        ["cp", f"{COLLECT_DIR}/board/leaderboard.html", "$2"],
        ["cp", f"{COLLECT_DIR}/board/metrics.json", "$3"],
    )

    @dsl.container_component
    def prepare(data_root: str, name: str, dataset: Output[Dataset]):
        """Copy the raw dataset ``<data_root>/<name>`` (PVC path or s3:// URI) into the artifact, prepare it beside."""
        return _spec(["sh", "-ec", prepare_script, data_root, dataset.path, name])

    @dsl.container_component
    def train(method: str, recipe: str, gpus: int, dataset: Input[Dataset], model: Output[Model],
              init: Input[Model] = None):
        """``torchrun --nproc_per_node N segrepro train``: one DDP process per requested GPU; ``init`` is the
        previous stage's run folder for a multi-stage recipe (init_from)."""
        init_option = segrepro_args(["train"], init="INIT")[2:]  # ["--init", "INIT"]: the option's own name
        return _spec([
            "torchrun", "--standalone", "--nproc_per_node", gpus, "--no-python",
            *segrepro_args(["train"], method=method, recipe=recipe,
                           data=f"{dataset.path}/{DATASET_SUBDIR}", out=model.path),
            dsl.IfPresentPlaceholder(input_name="init", then=[init_option[0], f"{init.path}/{MODEL_FILE}"]),
        ])

    @dsl.container_component
    def evaluate(method: str, dataset: Input[Dataset], model: Input[Model], results: Output[Metrics]):
        """Official-protocol evaluation on val; the artifact is the evaluated run (train summary + eval/)."""
        return _spec(["sh", "-ec", evaluate_script, method, model.path, results.path, dataset.path])

    @dsl.container_component
    def submit(method: str, dataset: Input[Dataset], model: Input[Model], submission: Output[Artifact]):
        """The Cityscapes test-server zip for the trained weights."""
        return _spec(segrepro_args(
            ["submit", "build"], method=method, checkpoint=f"{model.path}/{MODEL_FILE}",
            data=f"{dataset.path}/{DATASET_SUBDIR}", out=submission.path,
        ))

    @dsl.container_component
    def collect(row: str, result: Input[Metrics], runs: Output[Artifact], previous: Input[Artifact] = None):
        """The runs folder so far (``previous``) plus this evaluated run as ``runs/<row>``."""
        return _spec(["sh", "-ec", collect_script, row, result.path, runs.path,
                      dsl.IfPresentPlaceholder(input_name="previous", then=[previous.path], else_=[NO_RUNS])])

    @dsl.container_component
    def leaderboard(runs: Input[Artifact], board: Output[Markdown], page: Output[HTML], scores: Output[Metrics]):
        """One table over every evaluated run (the collected runs folder)."""
        return _spec(["sh", "-ec", leaderboard_script, runs.path, board.path, page.path, scores.path])

    return StageComponents(prepare, train, evaluate, submit, collect, leaderboard)
