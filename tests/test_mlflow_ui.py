"""The MLflow UI in a real browser: headless Chromium renders the "segrepro" experiment of a real server.

The screenshot is kept as a test artifact in ``tests/artifacts/`` (git-ignored); its path is printed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.servers import mlflow_server

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
RUNS = {"alignseg": ["alignseg-demo-r1", "alignseg-demo-r2"], "acfnet": ["acfnet-demo-r1", "acfnet-demo-r2"]}
# Headless flags from the platform notes; without the virtual time budget only the loading page renders.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--virtual-time-budget=15000",
    "--window-size=1400,900",
]


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120,
        )


@pytest.fixture(scope="module")
def experiment_page(tmp_path_factory: pytest.TempPathFactory):
    """A real server holding two methods' runs; yields the experiment page URL."""
    if shutil.which("chromium") is None:
        pytest.skip("chromium not installed (run scripts/ci-system-deps.sh as root)")
    from mlflow import MlflowClient

    with mlflow_server(tmp_path_factory.mktemp("mlflow_ui")) as url:
        client = MlflowClient(tracking_uri=url)
        exp = client.create_experiment("segrepro")
        for method, names in RUNS.items():
            for i, name in enumerate(names):
                run = client.create_run(exp, run_name=name, tags={"method": method, "stage": "evaluate"})
                client.log_metric(run.info.run_id, "val_mIoU", 0.4 + 0.1 * i)
                client.set_terminated(run.info.run_id)
        # MLflow 3 opens an experiment on its GenAI overview; the training runs table is the /runs tab.
        yield f"{url}/#/experiments/{exp}/runs"


def test_experiment_page_lists_runs_of_each_method(experiment_page: str) -> None:
    """The UI's own filter on the ``method`` tag shows exactly that method's runs."""
    for method, names in RUNS.items():
        search = quote(f"tags.method = '{method}'")
        proc = chromium("--dump-dom", f"{experiment_page}?searchFilter={search}")
        assert proc.returncode == 0, proc.stderr[-2000:]
        dom = proc.stdout
        assert "<title>Runs - Experiment" in dom and "segrepro" in dom
        for name in names:
            assert name in dom, f"run {name} of {method} missing from the rendered experiment page"
        others = [n for m, ns in RUNS.items() if m != method for n in ns]
        assert not any(n in dom for n in others), f"filter on method={method} shows other methods' runs"


def test_experiment_page_screenshot(experiment_page: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mlflow_ui_experiment.png"
    shot.unlink(missing_ok=True)
    proc = chromium(f"--screenshot={shot}", experiment_page)
    assert proc.returncode == 0, proc.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1400, 900)
    print(f"MLflow UI screenshot: {shot}")
