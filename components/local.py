"""Python components with the container components' signatures, calling ``segrepro.stages``.

They let the very same graph run under ``kfp.local.SubprocessRunner(use_venv=False)``, which
refuses container components. kfp ships each function's source to a subprocess, so every body
imports what it needs; the work itself lives in segrepro, not here.
"""


from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from segrepro_components import DEFAULT_IMAGE, StageComponents


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare(data_root: str, name: str, dataset: Output[Dataset]):
    """Copy the raw dataset ``<data_root>/<name>`` into the artifact, then write the prepared data beside it."""
    from pathlib import Path

    from segrepro.data import prepare_dataset
    from segrepro_components import DATASET_SUBDIR
    from segrepro_pipelines.data import fetch_data

    root = fetch_data(f"{data_root.rstrip('/')}/{name}", Path(dataset.path) / DATASET_SUBDIR)
    prepare_dataset(name, root)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(method: str, recipe: str, gpus: int, dataset: Input[Dataset], model: Output[Model],
          init: Input[Model] = None):
    """One process here (torchrun is the container's business); params.yaml from the cwd. ``init``: the
    previous stage's run folder, for a multi-stage recipe (init_from)."""
    from pathlib import Path

    from segrepro import stages
    from segrepro_components import DATASET_SUBDIR, MODEL_FILE

    start = Path(init.path) / MODEL_FILE if init is not None else None
    stages.train(method, recipe or None, Path(dataset.path) / DATASET_SUBDIR, Path(model.path), resume=True,
                 init=start)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(method: str, dataset: Input[Dataset], model: Input[Model], results: Output[Metrics]):
    """Evaluate on val; the artifact is the evaluated run (train summary and config, plus eval/)."""
    import shutil
    from pathlib import Path

    from segrepro import stages
    from segrepro_components import DATASET_SUBDIR, MODEL_FILE
    from segrepro_pipelines.data import TRAIN_FILES

    out = Path(results.path)
    out.mkdir(parents=True, exist_ok=True)
    for name in TRAIN_FILES:
        shutil.copyfile(Path(model.path) / name, out / name)
    trained = stages.TrainedModel(method, Path(model.path) / MODEL_FILE)
    summary = stages.evaluate(trained, Path(dataset.path) / DATASET_SUBDIR, out=out / "eval")
    results.metadata.update({k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def submit(method: str, dataset: Input[Dataset], model: Input[Model], submission: Output[Artifact]):
    """Build the test-server zip."""
    from pathlib import Path

    from segrepro import stages
    from segrepro_components import DATASET_SUBDIR, MODEL_FILE

    trained = stages.TrainedModel(method, Path(model.path) / MODEL_FILE)
    stages.submit_build(trained, Path(dataset.path) / DATASET_SUBDIR, Path(submission.path))


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def collect(row: str, result: Input[Metrics], runs: Output[Artifact], previous: Input[Artifact] = None):
    """The runs folder so far (``previous``) plus this evaluated run as ``runs/<row>``."""
    import shutil
    from pathlib import Path

    if previous is not None:
        shutil.copytree(previous.path, runs.path, dirs_exist_ok=True)
    shutil.copytree(result.path, Path(runs.path) / row)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def leaderboard(runs: Input[Artifact], board: Output[Markdown], page: Output[HTML], scores: Output[Metrics]):
    """Build the leaderboard over the collected runs folder, hand out its files."""
    import shutil
    import tempfile
    from pathlib import Path

    from segrepro import stages

    with tempfile.TemporaryDirectory() as tmp:
        rows = sorted(p.name for p in Path(runs.path).iterdir())
        stages.leaderboard(Path(runs.path), Path(tmp) / "board", methods=rows)
        for name, artifact in (("leaderboard.md", board), ("leaderboard.html", page), ("metrics.json", scores)):
            shutil.copyfile(Path(tmp) / "board" / name, artifact.path)


LOCAL = StageComponents(prepare, train, evaluate, submit, collect, leaderboard)
