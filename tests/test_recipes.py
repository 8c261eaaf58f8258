"""Recipes are the truth: every params.yaml key is a schema field that drives behaviour, bad input is one
line (exit 2) before any work, the method cards match the models, and the run folder is the record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import yaml
from pydantic import BaseModel

from segrepro.cli import main
from segrepro.data import synth_dataset
from segrepro.data.transforms import RandomBrightness, RandomHorizontalFlip, RandomResize, build_train_transforms
from segrepro.engine.config import apply_overrides, load_params
from segrepro.engine.recipe import Recipe, _models_in, batch_layout, resolve
from segrepro.engine.schedule import build_optimizer
from segrepro.models import build, get_card, list_methods

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"


def _run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _leaves(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(tree, dict) and tree:
        return [leaf for k, v in tree.items() for leaf in _leaves(v, (*prefix, k))]
    if isinstance(tree, list) and tree and all(isinstance(v, dict) for v in tree):
        return [leaf for i, v in enumerate(tree) for leaf in _leaves(v, (*prefix, i))]
    return [prefix]


def _declared(path: tuple[Any, ...]) -> bool:
    """Whether a recipe key path names a field of the schema (through nested models and their lists)."""
    model: type[BaseModel] = Recipe
    keyed = False  # the previous field is a dict of models (``eval.<split>``): this part is a key
    for i, part in enumerate(path):
        if isinstance(part, int) or keyed:
            keyed = False
            continue
        if part not in model.model_fields:
            return False
        models, where = _models_in(model.model_fields[part].annotation)
        if i < len(path) - 1:
            if not models:
                return False
            model, keyed = models[0], where == "values"
    return True


def test_every_recipe_leaf_is_a_schema_field_and_every_recipe_validates() -> None:
    params = load_params(PARAMS)
    leaves = [(m, n, leaf) for m, recipes in params["recipes"].items() for n, r in recipes.items()
              for leaf in _leaves(r)]
    assert len(leaves) > 100
    undeclared = [f"recipes.{m}.{n}.{'.'.join(map(str, leaf))}" for m, n, leaf in leaves
                  if leaf != ("extends",) and not _declared(leaf)]
    assert undeclared == []
    for method, recipes in params["recipes"].items():
        for name in recipes:
            recipe = resolve(params, method, name)
            for m, n, leaf in leaves:  # the value given in the file is the value the object holds
                if (m, n) == (method, name) and leaf[0] not in ("extends", "loss", "scale"):
                    node: Any = recipe
                    for part in leaf:
                        node = node[part] if isinstance(part, int) or isinstance(node, dict) else getattr(node, part)
                    given: Any = recipes[name]
                    for part in leaf:
                        given = given[part]
                    assert node == (tuple(given) if isinstance(given, list) else given), (method, name, leaf)


def _recipe(method: str, *sets: str) -> Recipe:
    return resolve(apply_overrides(load_params(PARAMS), list(sets)), method)


def test_mutated_keys_change_behaviour() -> None:
    """A handful of the keys the issue found dead: each change shows up in what the engine builds."""
    model = build("ann", variant="tiny")
    sgd = build_optimizer(model, _recipe("ann").optimizer, get_card("ann").head_prefixes)
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 1
    adamw = _recipe("ann", "train.ann.optimizer.name=adamw", "recipes.ann.official.optimizer="
                    "{name: adamw, lr: 0.01, weight_decay: 0.01}")
    assert isinstance(build_optimizer(model, adamw.optimizer), torch.optim.AdamW)
    mult = _recipe("ann", "train.ann.optimizer.head_lr_mult=10")
    groups = build_optimizer(model, mult.optimizer, get_card("ann").head_prefixes).param_groups
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0] and all(g["params"] for g in groups)

    image = {"image": torch.full((8, 8, 3), 100, dtype=torch.uint8).numpy()}
    bgr, rgb = _recipe("ann"), _recipe("ann", "train.ann.normalization=imagenet_rgb")
    assert bgr.norm() != rgb.norm()
    assert not torch.equal(*(build_eval(r)(image)["image"] for r in (bgr, rgb)))
    kinds = lambda r: {type(t) for t in build_train_transforms(r.train_augment(), r.norm()).transforms}  # noqa: E731
    no_flip = _recipe("ann", "train.ann.flip=false")
    assert RandomHorizontalFlip in kinds(bgr) and RandomHorizontalFlip not in kinds(no_flip)
    assert RandomBrightness in kinds(bgr) and RandomBrightness not in kinds(_recipe("ann", "train.ann.brightness=0"))
    choices = [f"recipes.ann.{n}.scale={{choices: [0.5, 1.5, 0.25]}}" for n in ("official", "demo")]
    assert RandomResize in kinds(bgr) and RandomResize not in kinds(_recipe("ann", *choices))
    # gpus: the paper's count; without per_gpu_batch it sets the micro-batch and so the accumulation
    paper = _recipe("gald", "recipes.gald.demo.per_gpu_batch=null", "train.gald.gpus=2")
    assert (paper.micro_batch, batch_layout(paper, 1).accumulation) == (2, 2)
    assert batch_layout(_recipe("gald", "recipes.gald.demo.per_gpu_batch=null"), 1).accumulation == 1
    assert _recipe("ann", "train.ann.seed=1").seed == 1


def build_eval(recipe: Recipe):
    from segrepro.data.transforms import build_eval_transforms

    return build_eval_transforms(recipe.norm(), *recipe.eval_sizes())


@pytest.mark.parametrize("method", list_methods())
def test_card_outputs_match_a_real_forward(method: str) -> None:
    card = get_card(method)
    model = build(method, variant="tiny").train()
    torch.manual_seed(0)
    if card.objective == "self_supervised":
        out = model.eval()(torch.randn(1, 3, 32, 32))
        assert card.outputs == ("main",) and out.main.dim() == 4
    else:
        out = model(torch.randn(2, 3, 64, 64))
        assert set(card.outputs) == {"main", *out.aux}
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith(card.head_prefixes) for n in names)
    assert any(not n.startswith(card.head_prefixes) for n in names)


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    yield tmp_path
    mlflow.end_run()


def _edit(path: Path, edit: Any) -> None:
    params = yaml.safe_load(path.read_text())
    edit(params)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize("how,expected", [
    (["--set", "train.ann.iteration=5"], "error: train.ann.iteration: unknown key; did you mean iterations?"),
    (["--set", "train.ann.optimizer.lr=-1"], "error: train.ann.optimizer.lr: input should be greater than 0"),
    (["--set", "train.ann.scale.range=[0, 2]"], "error: train.ann.scale.range.0: input should be greater than 0"),
    (["--set", "recipes.ann.demo.loss.terms=[{output: aux, loss: ce}]"],
     "error: recipes.ann.demo.loss.terms.0.output: ann returns no output 'aux'"),
    ("file:cycle", "error: recipes.ann.demo.extends: cycle official → demo → official"),
    ("file:unknown", "error: recipes.gald.official.ohem_thresh: unknown key;"),
    ("file:top", "error: sinth: unknown key; did you mean synth?"),
    ("file:crop", "error: recipes.dgcnet.official.crop: input should be greater than 0"),
])
def test_bad_recipes_are_one_line_exit_2_and_leave_nothing(workspace: Path, capsys: pytest.CaptureFixture[str],
                                                           how: Any, expected: str) -> None:
    edits = {
        "file:cycle": lambda p: p["recipes"]["ann"]["official"].update(extends="demo"),
        "file:unknown": lambda p: p["recipes"]["gald"]["official"].update(ohem_thresh=0.7),
        "file:top": lambda p: p.update(sinth={}),
        "file:crop": lambda p: p["recipes"]["dgcnet"]["official"].update(crop=0),
    }
    sets: list[str] = []
    if isinstance(how, str):
        _edit(workspace / "params.yaml", edits[how])
    else:
        sets = how
    code = _run(["train", "--method", "ann", "--data", "nowhere", *sets])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(expected), err
    assert not (workspace / "runs").exists() and not (workspace / "mlflow.db").exists()


def test_run_folder_is_the_record(workspace: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Trained with the demo recipe; after params.yaml changes the variant, evaluate still uses the run's
    config (one warning line), and --strict-config refuses."""
    synth_dataset("cityscapes", workspace / "cs", "2,2,1", (64, 128), 0)
    fast = {"iterations": 2, "crop": 64, "workers": 0, "per_gpu_batch": 2}
    _edit(workspace / "params.yaml", lambda p: p["train"]["gald"].update(fast))
    assert _run(["train", "--method", "gald", "--data", "cs"]) == 0
    run = workspace / "runs" / "gald"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["variant"] == "tiny" and config["iterations"] == 2 and config["optimizer"]["name"] == "sgd"
    ckpt = torch.load(next((run / "checkpoints").glob("iter_*.pt")), weights_only=True)
    assert ckpt["config"] == config
    summary = json.loads((run / "train_summary.json").read_text())
    facts = {"world_size": 1, "micro_batch": 2, "accumulation": 2, "global_batch": 4}
    assert {k: summary[k] for k in facts} == facts
    params = mlflow.MlflowClient().get_run(summary["mlflow_run_id"]).data.params
    assert {k: params[k] for k in facts} == {k: str(v) for k, v in facts.items()}
    assert params["optimizer.name"] == "sgd" and params["normalization"] == "caffe_bgr" and "iteration" not in params

    evaluate = ["evaluate", "--method", "gald", "--checkpoint", str(run / "model.pt"), "--data", "cs",
                "--device", "cpu", "--workers", "0", "--no-mlflow"]
    def said() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"INFO": [], "WARNING": []}
        for r in caplog.records:
            if r.name == "segrepro.stages":
                out.setdefault(r.levelname, []).append(r.getMessage())
        caplog.clear()
        return out

    caplog.set_level("INFO", logger="segrepro")
    assert _run([*evaluate, "--out", "before"]) == 0
    before = json.loads((workspace / "before" / "metrics.json").read_text())
    assert said() == {"INFO": [f"gald: recipe demo from {run / 'config.yaml'}"], "WARNING": []}
    _edit(workspace / "params.yaml", lambda p: p["recipes"]["gald"]["demo"].update(variant="r101"))
    assert _run([*evaluate, "--out", "after"]) == 0
    warnings = said()["WARNING"]
    assert len(warnings) == 1 and "variant: 'tiny' → 'r101'" in warnings[0]
    after = json.loads((workspace / "after" / "metrics.json").read_text())
    assert after["averageScoreClasses"] == before["averageScoreClasses"]
    assert after["segrepro"]["config"] == str(run / "config.yaml")
    assert _run([*evaluate, "--out", "strict", "--strict-config"]) == 2
    assert not (workspace / "strict").exists()
    assert _run([*evaluate, "--recipe", "official"]) == 2  # --recipe is only for checkpoints without a config


def test_merge_chain_names_an_unknown_recipe() -> None:
    from segrepro.engine.config import merge_chain
    from segrepro.errors import UserError

    with pytest.raises(UserError, match=r"^recipes\.ann: unknown recipe 'official' \(known: demo\)$"):
        merge_chain({"demo": {}}, "ann", "official")
    with pytest.raises(UserError, match=r"^recipes\.ann\.demo\.extends: unknown recipe 'x'"):
        merge_chain({"demo": {"extends": "x"}}, "ann", "demo")
