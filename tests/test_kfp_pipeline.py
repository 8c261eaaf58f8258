"""The compiled cityscapes_benchmark IR: one branch per benchmark row on its own dataset, multi-stage rows
chained, resources and Kubernetes settings per task, component command lines that the real CLI accepts,
and the Kubeflow Trainer TrainJob spec."""

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from segrepro_components.cli_args import segrepro_args, validate_argv
from segrepro_pipelines.cityscapes_benchmark import benchmark_rows, compile_pipeline
from segrepro_pipelines.cluster import ClusterConfig
from segrepro_pipelines.trainjob import trainjob_spec

REPO = Path(__file__).resolve().parents[1]
CLUSTER = ClusterConfig(
    pvc_name="bench-pvc", mount_path="/mnt/bench", train_cpu="12", train_memory="48G", eval_cpu="6",
    eval_memory="24G", train_retries=3, node_selector={"gpu.type": "a100"},
    tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    mlflow_secret="mlflow-creds", s3_secret="s3-creds",
)
GPU_TASKS = ("exec-train", "exec-evaluate", "exec-submit")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = compile_pipeline(tmp_path_factory.mktemp("kfp") / "pipeline.yaml", CLUSTER, REPO / "params.yaml")
    spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _render(tokens: list[str]) -> list[str]:
    """Stand-in values for kfp placeholders, so a command line can be parsed like at run time (an optional
    input's ``IfPresent`` as if it were given)."""
    out = []
    for token in tokens:
        if token.startswith('{"IfPresent"'):
            out += _render(json.loads(token)["IfPresent"]["Then"])
        else:
            out.append(re.sub(r"\{\{\$\.[^}]*\}\}", "x", token))
    return out


def _kind(executor: str) -> str:
    """``exec-train-3`` → ``exec-train``: one executor per task, numbered by kfp."""
    return re.sub(r"-\d+$", "", executor)


def _tasks(spec: dict) -> dict:
    """Every task of the graph (root DAG and condition branches), by task name."""
    found = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        found.update(comp.get("dag", {}).get("tasks", {}))
    return found


def _producer(artifact: dict) -> str:
    """The task an artifact input comes from (inside a condition branch: through the branch's input)."""
    if "taskOutputArtifact" in artifact:
        return artifact["taskOutputArtifact"]["producerTask"]
    return re.fullmatch(r"pipelinechannel--(.+)-dataset", artifact["componentInputArtifact"])[1]


def _segrepro_argvs(container: dict) -> list[list[str]]:
    """Every ``segrepro ...`` invocation a container runs (direct, under torchrun, or in sh -ec)."""
    argv = _render(container["command"] + container.get("args", []))
    if argv[:2] == ["sh", "-ec"]:
        words = shlex.split(argv[2])
        lines, current = [], []
        for word in words + ["&&"]:
            if word == "&&":
                lines.append([w for w in current if w != "exec"])
                current = []
            else:
                current.append(word)
        return [line for line in lines if line and line[0] == "segrepro"]
    return [argv[argv.index("segrepro"):]] if "segrepro" in argv else []


def test_pipeline_parameters(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"gpus", "num_nodes", "image", "data_root"}
    assert params["data_root"]["defaultValue"] == "/mnt/bench/data"  # one folder per dataset below it
    assert not any("mlflow" in name.lower() for name in params)  # the URI comes from a secret only


def test_one_branch_per_benchmark_row_on_its_dataset(compiled: tuple[dict, dict]) -> None:
    """Every benchmark row (not only Cityscapes) trains and evaluates on the prepare task of its dataset; the
    submit rows build archives; a multi-stage row takes the previous row's Model as ``init``."""
    spec, _ = compiled
    tasks = _tasks(spec)
    by_label = {task["taskInfo"]["name"]: name for name, task in tasks.items()}
    rows = benchmark_rows(REPO / "params.yaml")
    assert {r.dataset for r in rows} >= {"cityscapes", "voc", "ade20k", "coco_stuff27"}
    for dataset in {r.dataset for r in rows}:
        prepare = tasks[by_label[f"prepare-{dataset}"]]
        assert prepare["inputs"]["parameters"]["name"]["runtimeValue"]["constant"] == dataset
    for row in rows:
        train = tasks[by_label[f"train-{row.name}"]]
        assert train["inputs"]["parameters"]["recipe"]["runtimeValue"]["constant"] == row.recipe
        assert _producer(train["inputs"]["artifacts"]["dataset"]) == by_label[f"prepare-{row.dataset}"]
        assert (f"submit-{row.name}" in by_label) == row.submit
        assert f"evaluate-{row.name}" in by_label and f"collect-{row.name}" in by_label
    chained = [r for r in rows if r.init]
    assert [(r.name, r.init) for r in chained] == [("gald-demo_coarse_stage2", "gald-demo"),
                                                   ("gald-demo_coarse", "gald-demo_coarse_stage2")]
    last = tasks[by_label["train-gald-demo_coarse"]]["inputs"]["artifacts"]["init"]["taskOutputArtifact"]
    assert (last["producerTask"], last["outputArtifactKey"]) == (by_label["train-gald-demo_coarse_stage2"], "model")
    assert "init" not in tasks[by_label["train-ann-demo"]]["inputs"]["artifacts"]


def test_resources_and_kubernetes_settings(compiled: tuple[dict, dict]) -> None:
    spec, k8s = compiled
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--gpus']}}"
    assert train["resources"]["resourceCpuRequest"] == "12"
    assert train["resources"]["resourceMemoryRequest"] == "48G"
    assert train["command"][:4] == ["torchrun", "--standalone", "--nproc_per_node", "{{$.inputs.parameters['gpus']}}"]
    for name in ("exec-evaluate", "exec-submit"):
        res = executors[name]["container"]["resources"]
        assert res["accelerator"]["resourceCount"] == "1"
        assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == ("6", "24G")
    for name, executor in executors.items():
        kind = _kind(name)
        assert executor["container"]["image"] == "{{$.inputs.parameters['pipelinechannel--image']}}", name
        settings = k8s[name]
        assert [(m["mountPath"], m["constant"]) for m in settings["pvcMount"]] == [("/mnt/bench", "bench-pvc")]
        env = {(s["secretName"], e["envVar"]) for s in settings["secretAsEnv"] for e in s["keyToEnv"]}
        assert ("mlflow-creds", "MLFLOW_TRACKING_URI") in env and ("s3-creds", "AWS_SECRET_ACCESS_KEY") in env
        if kind in GPU_TASKS:
            assert settings["nodeSelector"]["labels"] == {"gpu.type": "a100"}
            assert settings["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        else:
            assert "nodeSelector" not in settings and "tolerations" not in settings


def test_retries_and_caching(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    all_tasks = _tasks(spec)
    assert all_tasks["prepare"]["cachingOptions"]["enableCache"] is True
    assert all_tasks["train"]["retryPolicy"]["maxRetryCount"] == 3
    assert not all_tasks["train"]["cachingOptions"].get("enableCache", False)
    assert "launch-trainjob" in all_tasks and "leaderboard" in all_tasks


def test_every_component_command_is_a_valid_segrepro_invocation(compiled: tuple[dict, dict]) -> None:
    spec, _ = compiled
    seen = {}
    for name, executor in spec["deploymentSpec"]["executors"].items():
        for argv in _segrepro_argvs(executor["container"]):
            validate_argv(argv)  # raises on an unknown option or command
            seen.setdefault(_kind(name), set()).add(tuple(argv[:3]))
    assert "--init" in _segrepro_argvs(spec["deploymentSpec"]["executors"]["exec-train"]["container"])[0]
    assert seen["exec-prepare"] == {("segrepro", "pipeline", "fetch"), ("segrepro", "data", "prepare")}
    assert seen["exec-train"] == {("segrepro", "train", "--method")}
    assert seen["exec-evaluate"] == {("segrepro", "evaluate", "--method")}
    assert seen["exec-submit"] == {("segrepro", "submit", "build")}
    assert seen["exec-leaderboard"] == {("segrepro", "leaderboard", "--runs")}
    assert "exec-collect" not in seen  # plain cp of the runs folder so far plus one evaluated run


def test_cli_args_refuse_unknown_options() -> None:
    with pytest.raises(KeyError, match="no option"):
        segrepro_args(["train"], methd="ann")
    with pytest.raises(KeyError, match="no command"):
        segrepro_args(["trian"])
    with pytest.raises(Exception, match="No such option"):
        validate_argv(["segrepro", "train", "--method", "ann", "--bogus", "1"])


def test_trainjob_spec_two_nodes_four_gpus() -> None:
    from kubeflow_trainer_api import models

    job = trainjob_spec("segrepro-ann-1", "registry/segrepro:1", "ann", "official", 2, 4,
                        "/mnt/bench/trainjobs/x/data/cityscapes", "/mnt/bench/trainjobs/x/run", CLUSTER, "team")
    body = job.to_dict()
    again = models.TrainerV1alpha1TrainJob.from_dict(body)  # validates against the SDK's models
    assert again.to_dict() == body
    trainer = again.spec.trainer
    assert (trainer.num_nodes, trainer.num_proc_per_node, trainer.image) == (2, 4, "registry/segrepro:1")
    assert trainer.command[:5] == ["torchrun", "--nproc_per_node", "4", "--no-python", "segrepro"]
    ctx = validate_argv(trainer.command[4:])
    assert (ctx.params["method"], ctx.params["recipe"], str(ctx.params["out"])) == ("ann", "official", "/mnt/bench/trainjobs/x/run")
    limits = body["spec"]["trainer"]["resourcesPerNode"]["limits"]
    assert limits == {"nvidia.com/gpu": "4", "cpu": "12", "memory": "48G"}
    assert again.spec.runtime_ref.name == "torch-distributed"
    pod = body["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    pod_spec = pod["template"]["spec"]["template"]["spec"]
    assert pod_spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "bench-pvc"
    assert pod_spec["nodeSelector"] == {"gpu.type": "a100"}
    assert {e["name"] for e in body["spec"]["trainer"]["env"]} >= {"MLFLOW_TRACKING_URI", "AWS_ACCESS_KEY_ID"}
    with pytest.raises(ValueError, match="at least one node"):
        trainjob_spec("x", "i", "ann", "official", 0, 4, "/d", "/o", CLUSTER)


def test_fetch_data_copies_a_local_root_all_or_nothing(tmp_path: Path) -> None:
    from segrepro.errors import UserError
    from segrepro_pipelines.data import fetch_data

    src = tmp_path / "raw" / "cityscapes"
    (src / "leftImg8bit").mkdir(parents=True)
    (src / "leftImg8bit" / "a.png").write_bytes(b"png")
    dst = tmp_path / "artifact" / "root"
    dst.mkdir(parents=True)
    (dst / "stale.txt").write_text("from a retried step")
    assert fetch_data(str(src), dst) == dst
    assert sorted(p.name for p in dst.rglob("*")) == ["a.png", "leftImg8bit"]  # replaced as a whole
    with pytest.raises(UserError, match="dataset root not found"):
        fetch_data(str(tmp_path / "missing"), tmp_path / "other")
