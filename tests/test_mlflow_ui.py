"""The MLflow UI in a real browser: headless Chromium renders the runs our tracker logs on a real server.

The runs are logged as the stages log them (:class:`MlflowTracker` with a dataset, eval runs nested under
their training run, datasets as inputs). Screenshots are kept in ``tests/artifacts/`` (git-ignored); their
paths are printed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest

from segrepro.tracking.mlflow_tracker import MlflowTracker, headline_view_url
from tests.servers import mlflow_server

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# method → (dataset, val mIoU of training, mIoU of evaluation)
METHODS = {"alignseg": ("cityscapes", 0.646, 0.631), "acfnet": ("cityscapes", 0.655, 0.642),
           "gald": ("cityscapes", 0.702, 0.688), "dgcnet": ("cityscapes", 0.716, 0.705),
           "ann": ("cityscapes", 0.710, 0.699), "alignseg_ssl": ("voc", 0.394, 0.401)}
# Headless flags from the platform notes; without the virtual time budget only the loading page renders.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1600,900",
]


def chromium(*args: str, budget_ms: int = 15000) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--virtual-time-budget={budget_ms}", f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A real server holding each method's training run and its nested evaluation run; yields
    (url, {dataset: experiment id}, {method: (train run id, eval run id)})."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed (run scripts/ci-system-deps.sh as root)")
    from mlflow import MlflowClient

    tmp = tmp_path_factory.mktemp("mlflow_ui")
    (tmp / "cityscapes").mkdir()
    (tmp / "voc").mkdir()
    with mlflow_server(tmp / "server") as url:
        runs = {}
        for method, (dataset, val, miou) in METHODS.items():
            train = MlflowTracker(f"{method}-demo", {"method": method, "stage": "train", "dataset": dataset},
                                  {"recipe": "demo"}, uri=url, dataset=dataset)
            train.log_dataset(dataset, "train", tmp / dataset, "d41d8cd98f00b204e9800998ecf8427e", "training")
            train.log_metrics({"val_mIoU": val}, step=600)
            train.end()
            ev = MlflowTracker(f"{method}-eval-official", {"method": method, "stage": "evaluate", "dataset": dataset},
                               {"protocol": "official"}, uri=url, dataset=dataset, parent_run_id=train.run_id)
            ev.log_dataset(dataset, "val", tmp / dataset, "d41d8cd98f00b204e9800998ecf8427e", "evaluation")
            ev.log_metrics({"mIoU": miou}, step=0)
            ev.end()
            runs[method] = (train.run_id, ev.run_id)
        client = MlflowClient(url)
        experiments = {d: client.get_experiment_by_name(f"segrepro-{d}").experiment_id for d in ("cityscapes", "voc")}
        yield url, experiments, runs


def test_one_experiment_per_dataset_in_the_training_view(server) -> None:
    url, experiments, runs = server
    proc = chromium("--dump-dom", f"{url}/#/experiments")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "segrepro-cityscapes" in proc.stdout and "segrepro-voc" in proc.stdout
    # Tagged as a model-training experiment. (MLflow 3.17 still lands a fresh browser profile on the
    # Overview tab: its GenAI / Model-training switch is browser-local state; the runs table is /runs.)
    from mlflow import MlflowClient

    kind = MlflowClient(url).get_experiment(experiments["cityscapes"]).tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"
    dom = chromium("--dump-dom", headline_view_url(url, experiments["cityscapes"])).stdout
    assert "<title>Runs - Experiment" in dom, dom[dom.find("<title>"):dom.find("</title>")]
    for method, (dataset, _, _) in METHODS.items():
        assert (f"{method}-demo" in dom) == (dataset == "cityscapes"), method  # VOC never mixes in


def test_runs_table_filters_by_method(server) -> None:
    """The UI's own filter on the ``method`` tag shows exactly that method's runs."""
    url, experiments, _ = server
    search = quote("tags.method = 'gald'")
    dom = chromium("--dump-dom", f"{url}/#/experiments/{experiments['cityscapes']}/runs?searchFilter={search}").stdout
    assert "gald-demo" in dom and not any(f"{m}-demo" in dom for m in ("alignseg", "acfnet", "dgcnet", "ann"))


def test_eval_runs_sit_under_their_training_runs(server) -> None:
    from mlflow import MlflowClient

    url, experiments, runs = server
    client = MlflowClient(url)
    for train_id, eval_id in runs.values():
        run = client.get_run(eval_id)
        assert run.data.tags["mlflow.parentRunId"] == train_id
        assert run.inputs.dataset_inputs[0].dataset.digest
    # collapsed: the table shows the training runs; the nested eval runs open under them
    dom = chromium("--dump-dom", f"{url}/#/experiments/{experiments['cityscapes']}/runs").stdout
    assert all(f"{m}-demo" in dom for m, (d, _, _) in METHODS.items() if d == "cityscapes")
    assert "alignseg-eval-official" not in dom


def test_screenshots_of_runs_table_and_charts(server) -> None:
    """The runs table and the chart view list every Cityscapes method with its val mIoU (headline view)."""
    url, experiments, _ = server
    dom = chromium("--dump-dom", headline_view_url(url, experiments["cityscapes"])).stdout
    for method, (dataset, val, _) in METHODS.items():
        if dataset == "cityscapes":
            assert f"{method}-demo" in dom and f">{val}<" in dom, method
    ARTIFACTS.mkdir(exist_ok=True)
    page = headline_view_url(url, experiments["cityscapes"])
    for name, target in (("mlflow_ui_runs_table.png", page), ("mlflow_ui_charts.png", page + "&compareRunsMode=CHART")):
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        proc = chromium(f"--screenshot={shot}", target, budget_ms=40000)  # charts render after the table
        assert proc.returncode == 0, proc.stderr[-2000:]
        png = shot.read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1600, 900)
        print(f"MLflow UI screenshot: {shot}")
