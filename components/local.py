"""Python components with the container components' signatures, calling ``segrepro.stages``.

They let the very same graph run under ``kfp.local.SubprocessRunner(use_venv=False)``, which
refuses container components. kfp ships each function's source to a subprocess, so every body
imports what it needs; the work itself lives in segrepro, not here.
"""


from typing import List

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import DEFAULT_IMAGE, StageComponents


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def prepare(data_root: str, dataset: Output[Dataset]):
    """Copy the raw dataset into the artifact, then write the prepared data beside it."""
    from pathlib import Path

    from components import DATASET_SUBDIR
    from pipelines.data import fetch_data
    from segrepro.data import prepare_dataset

    root = fetch_data(data_root, Path(dataset.path) / DATASET_SUBDIR)
    prepare_dataset("cityscapes", root)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(method: str, recipe: str, gpus: int, dataset: Input[Dataset], model: Output[Model]):
    """One process here (torchrun is the container's business); params.yaml from the cwd."""
    from pathlib import Path

    from components import DATASET_SUBDIR
    from segrepro import stages

    stages.train(method, recipe or None, Path(dataset.path) / DATASET_SUBDIR, Path(model.path), resume=True)


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(method: str, dataset: Input[Dataset], model: Input[Model], results: Output[Metrics]):
    """Evaluate on val; the artifact is the evaluated run (train summary and config, plus eval/)."""
    import shutil
    from pathlib import Path

    from components import DATASET_SUBDIR, MODEL_FILE
    from pipelines.data import TRAIN_FILES
    from segrepro import stages

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

    from components import DATASET_SUBDIR, MODEL_FILE
    from segrepro import stages

    trained = stages.TrainedModel(method, Path(model.path) / MODEL_FILE)
    stages.submit_build(trained, Path(dataset.path) / DATASET_SUBDIR, Path(submission.path))


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def leaderboard(results: Input[List[Metrics]], board: Output[Markdown], page: Output[HTML], scores: Output[Metrics]):
    """Link the evaluated runs into one folder, build the leaderboard, hand out its files."""
    import shutil
    import tempfile
    from pathlib import Path

    from pipelines.data import collect_runs
    from segrepro import stages

    with tempfile.TemporaryDirectory() as tmp:
        runs = collect_runs([r.path for r in results], Path(tmp) / "runs")
        stages.leaderboard(runs, Path(tmp) / "board")
        for name, artifact in (("leaderboard.md", board), ("leaderboard.html", page), ("metrics.json", scores)):
            shutil.copyfile(Path(tmp) / "board" / name, artifact.path)


LOCAL = StageComponents(prepare, train, evaluate, submit, leaderboard)
