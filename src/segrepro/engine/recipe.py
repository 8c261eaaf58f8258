"""The recipe schema (pydantic v2): one validated, frozen :class:`Recipe` per training run.

A method's recipe is built once from three layers, lowest first: its method card's defaults
(:mod:`segrepro.models.card`, e.g. normalisation and train crop), the ``recipes.<method>.<name>`` chain of
params.yaml (``extends`` of any depth) and the ``train.<method>`` overrides (where ``--set`` writes).
:class:`Recipe` holds every other default. Engine, evaluation and submission read only the validated
object; nothing downstream falls back to a default of its own.

Every key either drives behaviour or is refused: an unknown key, a bad value or an ``extends`` cycle is one
``error:`` line naming the key path the user wrote (``train.ann.iteration: unknown key; did you mean
iterations?``), raised before any work starts.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segrepro.data.transforms import IGNORE_INDEX, NORMALIZATIONS, Normalization, ScaleChoices, ScaleRange, TrainAugment
from segrepro.engine.config import (
    LOSS_TERM_WEIGHT,
    NOT_INHERITED,
    OHEM_DEFAULTS,
    OPTIMIZER_DEFAULTS,
    PAPER_GPUS,
    deep_merge,
    flatten,
    merge_chain,
    micro_batch,
    optimizer_defaults,
)
from segrepro.errors import RecipeError
from segrepro.models.card import MethodCard, Protocol

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
OPTIMIZER_SHORTCUTS = ("lr", "weight_decay", "momentum", "poly_power")  # train.<m>.lr means optimizer.lr


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScaleCfg(_Frozen):
    """Scale augmentation: ``choices: [start, stop, step]`` (discrete, both ends included) or ANN's
    ``range: [lo, hi]`` with ``aspect: [lo, hi]``."""

    choices: tuple[PositiveFloat, PositiveFloat, PositiveFloat] | None = None
    range: tuple[PositiveFloat, PositiveFloat] | None = None
    aspect: tuple[PositiveFloat, PositiveFloat] | None = None

    def augment(self) -> ScaleChoices | ScaleRange:
        if self.choices is not None:
            return ScaleChoices(*self.choices)
        assert self.range is not None
        return ScaleRange(self.range, self.aspect or (1.0, 1.0))


class OptimizerCfg(_Frozen):
    """``sgd`` (momentum, nesterov) or ``adamw``; poly lr for supervised recipes, step decay
    (``step_epochs``, ``gamma``) for the self-supervised one; ``head_lr_mult`` scales the card's head.
    A key the optimiser or schedule does not use stays null; :class:`Recipe` fills the defaults of the
    ones it does use (:data:`~segrepro.engine.config.OPTIMIZER_DEFAULTS`)."""

    name: Literal["sgd", "adamw"] = "sgd"
    lr: PositiveFloat
    weight_decay: Annotated[float, Field(ge=0)] = OPTIMIZER_DEFAULTS["all"]["weight_decay"]
    momentum: Annotated[float, Field(ge=0, lt=1)] | None = None
    nesterov: bool | None = None
    poly_power: PositiveFloat | None = None
    step_epochs: PositiveInt | None = None
    gamma: PositiveFloat | None = None
    head_lr_mult: PositiveFloat = OPTIMIZER_DEFAULTS["all"]["head_lr_mult"]


NEGATIVE_PRESSURE_DEFAULT = 0.11  # the self-supervised objective's (train_voc_config.yml)


class LossTermCfg(_Frozen):
    output: str  # "main" or an aux output the method card declares
    loss: Literal["ce", "ohem", "lovasz"]
    weight: float = LOSS_TERM_WEIGHT


class OhemCfg(_Frozen):
    thresh: Annotated[float, Field(ge=0, le=1)] = OHEM_DEFAULTS["thresh"]
    min_kept: PositiveInt = OHEM_DEFAULTS["min_kept"]
    rule: Literal["gald", "ann"] = OHEM_DEFAULTS["rule"]


class LossCfg(_Frozen):
    terms: Annotated[tuple[LossTermCfg, ...], Field(min_length=1)]
    ohem: OhemCfg = OhemCfg()
    class_weights: tuple[PositiveFloat, ...] | None = None


class EvalCfg(_Frozen):
    """A split's official protocol when the recipe's differs from the card's (``crop: null``: whole image)."""

    scales: Annotated[tuple[PositiveFloat, ...], Field(min_length=1)] = (1.0,)
    flip: bool = False
    crop: PositiveInt | None = None
    stride: PositiveInt | None = None
    resize: tuple[PositiveInt, PositiveInt] | None = None  # (short side, long-side cap) before the scales


class PaperCfg(_Frozen):
    """The published number this recipe reproduces (docs/recipes.md names each file); not inherited."""

    mIoU: PositiveFloat  # noqa: N815 (the name `segrepro recipes --json` prints)
    range: tuple[PositiveFloat, PositiveFloat] | None = None  # a published range; mIoU is its lower end
    split: str
    protocol: str
    source: str


class Recipe(_Frozen):
    """One fully resolved training recipe (what ``runs/<method>/config.yaml`` records)."""

    method: str
    recipe: str
    dataset: str
    objective: Literal["supervised", "self_supervised"]
    variant: str | None = None  # None: the registry's default variant (the resolver records which)
    num_classes: PositiveInt | None = None  # None: the dataset's (self-supervised: the variant's)
    ignore_index: int = IGNORE_INDEX
    train_split: str = "train"
    val_split: str = "val"
    pretrained: str | None = None
    gpus: PositiveInt = PAPER_GPUS  # the paper's GPU count: per_gpu_batch defaults to batch_size / gpus
    batch_size: PositiveInt  # the global batch
    per_gpu_batch: PositiveInt | None = None
    iterations: PositiveInt | None = None
    epochs: PositiveInt | None = None
    crop: PositiveInt | tuple[PositiveInt, PositiveInt]
    scale: ScaleCfg | None = None  # None: self-supervised multi-crop
    flip: bool = True
    brightness: Annotated[int, Field(ge=0)] = 0
    normalization: str
    optimizer: OptimizerCfg
    loss: LossCfg | None = None
    negative_pressure: PositiveFloat | None = None  # self-supervised only (default NEGATIVE_PRESSURE_DEFAULT)
    eval: dict[str, EvalCfg] = {}
    checkpoint_every: PositiveInt = 1000
    keep_checkpoints: PositiveInt = 3
    log_every: PositiveInt = 10
    amp: Literal["bf16", "fp16", "fp32"] = "bf16"
    workers: Annotated[int, Field(ge=0)] = 2
    seed: int = 0
    device: str = "auto"
    find_unused_parameters: bool = False
    paper: PaperCfg | None = None
    twin_of: str | None = None  # a CPU twin: the official recipe it stands in for (its paper number)
    init_from: str | None = None  # "<method>/<recipe>": start from that run's trained weights (multi-stage)
    train_min_side: PositiveInt | None = None  # resize to this short side before the random resize (ANN ADE20K)

    @model_validator(mode="before")
    @classmethod
    def _dependent_defaults(cls, data: Any) -> Any:
        """Fill the defaults that depend on the objective and optimiser (:func:`optimizer_defaults`)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("optimizer"), Mapping):
            return data
        objective = data.get("objective")
        out = {**data, "optimizer": optimizer_defaults(data["optimizer"], str(objective))}
        if objective == "self_supervised":
            out.setdefault("negative_pressure", NEGATIVE_PRESSURE_DEFAULT)
        return out

    @property
    def card(self) -> MethodCard:
        from segrepro.models.registry import get_card

        return get_card(self.method)

    @property
    def self_supervised(self) -> bool:
        return self.objective == "self_supervised"

    @property
    def micro_batch(self) -> int:
        """Images per process and step, before capping by the world size."""
        return micro_batch(self.batch_size, self.gpus, self.per_gpu_batch)

    @property
    def crop_hw(self) -> tuple[int, int]:
        return (self.crop, self.crop) if isinstance(self.crop, int) else self.crop

    def norm(self) -> Normalization:
        return NORMALIZATIONS[self.normalization]

    def train_augment(self) -> TrainAugment:
        return TrainAugment(
            self.crop_hw, self.scale.augment() if self.scale else None, self.flip, self.brightness, self.train_min_side
        )

    def eval_sizes(self, at_train_crop: bool = False) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
        """(input size, label size) of the eval transform; ``at_train_crop`` (quick val of a fixed-size
        method) feeds the training crop instead of the card's eval size."""
        card = self.card
        if card.eval_size is None:
            return None, None
        return (self.crop_hw if at_train_crop else card.eval_size), card.eval_label_size

    def official_protocols(self) -> dict[str, Protocol]:
        """The card's protocol per split, with the recipe's ``eval`` entries replacing it split by split."""
        table = dict(self.card.eval_protocols)
        for split, cfg in self.eval.items():
            table[split] = Protocol("official", cfg.scales, cfg.flip, cfg.crop, cfg.stride, cfg.resize)
        return table

    def model_num_classes(self) -> int | None:
        from segrepro.data import get_spec

        if self.num_classes is not None:
            return self.num_classes
        return None if self.self_supervised else get_spec(self.dataset).num_classes

    def total_iterations(self, num_samples: int) -> int:
        """``iterations``, or ``epochs`` over ``num_samples`` at the global batch."""
        if self.iterations is not None:
            return self.iterations
        assert self.epochs is not None
        return self.epochs * max(1, -(-num_samples // self.batch_size))

    def record(self) -> dict[str, Any]:
        """The JSON/YAML form (config.yaml, the checkpoint's ``config``)."""
        return self.model_dump(mode="json")

    def flat_params(self) -> dict[str, Any]:
        """The flattened recipe MLflow logs as params (credential-like keys left out)."""
        return flatten(self.record())


@dataclass(frozen=True)
class BatchLayout:
    """How the global batch is cut on this run: what train_summary.json and MLflow record."""

    world_size: int
    micro_batch: int
    accumulation: int
    global_batch: int

    def as_dict(self) -> dict[str, int]:
        return {
            "world_size": self.world_size,
            "micro_batch": self.micro_batch,
            "accumulation": self.accumulation,
            "global_batch": self.global_batch,
        }


def batch_layout(recipe: Recipe, world_size: int) -> BatchLayout:
    """Micro-batch = min(per-GPU batch, global / processes); accumulation keeps the global batch."""
    micro = min(recipe.micro_batch, max(1, recipe.batch_size // world_size))
    if recipe.batch_size % (micro * world_size):
        raise RecipeError(
            f"train.{recipe.method}: batch_size {recipe.batch_size} is not a multiple of micro-batch "
            f"{micro} × {world_size} process(es); change batch_size or per_gpu_batch"
        )
    return BatchLayout(world_size, micro, recipe.batch_size // (micro * world_size), recipe.batch_size)


# --- key checking -------------------------------------------------------------------------------


def _models_in(annotation: Any) -> tuple[list[type[BaseModel]], str]:
    """The BaseModel classes an annotation holds and where: ``"self"``, ``"items"`` (tuple/list) or
    ``"values"`` (dict)."""
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation], "self"
    if origin is Annotated:
        return _models_in(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        found: list[type[BaseModel]] = []
        where = "self"
        for arg in get_args(annotation):
            models, kind = _models_in(arg)
            if models:
                found, where = found + models, kind
        return found, where
    if origin in (tuple, list) and get_args(annotation):
        models, _ = _models_in(get_args(annotation)[0])
        return models, "items"
    if origin is dict:
        models, _ = _models_in(get_args(annotation)[1])
        return models, "values"
    return [], "self"


def _unknown(path: str, key: object, valid: Sequence[str]) -> RecipeError:
    close = difflib.get_close_matches(str(key), list(valid), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(sorted(valid))}"
    return RecipeError(f"{path}.{key}: unknown key; {hint}" if path else f"{key}: unknown key; {hint}")


def check_keys(
    raw: Mapping[str, Any], model: type[BaseModel], path: str, allowed: Sequence[str] = (), refused: Sequence[str] = ()
) -> None:
    """Refuse any key of ``raw`` (recursively) that ``model`` does not declare, naming ``path.key``."""
    valid = [k for k in model.model_fields if k not in refused] + list(allowed)
    for key, value in raw.items():
        if key not in valid:
            raise _unknown(path, key, valid)
        if key in allowed:
            continue
        models, where = _models_in(model.model_fields[key].annotation)
        if not models:
            continue
        fields = sorted({f for m in models for f in m.model_fields})
        children: list[tuple[str, Any]] = []
        if where == "self" and isinstance(value, Mapping):
            children = [(f"{path}.{key}", value)]
        elif where == "items" and isinstance(value, list):
            children = [(f"{path}.{key}.{i}", v) for i, v in enumerate(value) if isinstance(v, Mapping)]
        elif where == "values" and isinstance(value, Mapping):
            children = [(f"{path}.{key}.{k}", v) for k, v in value.items() if isinstance(v, Mapping)]
        for child_path, child in children:
            if len(models) == 1:
                check_keys(child, models[0], child_path)
            else:
                for k in child:
                    if k not in fields:
                        raise _unknown(child_path, k, fields)


# --- resolving -----------------------------------------------------------------------------------

_LAYER_REFUSED = ("method", "recipe")  # the resolver sets these


@dataclass(frozen=True)
class _Layer:
    path: str  # the user's key path of this layer, e.g. "recipes.ann.demo" or "train.ann"
    data: Mapping[str, Any]


def _lookup(data: Any, loc: Sequence[Any]) -> bool:
    for part in loc:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return False
    return True


def _data_loc(loc: Sequence[Any], data: Mapping[str, Any]) -> tuple[Any, ...]:
    """The part of a pydantic error location that indexes the data (union member names like ``int`` dropped);
    a missing key ends it."""
    out: list[Any] = []
    node: Any = data
    for part in loc:
        if isinstance(node, Mapping):
            out.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
    return tuple(out)


class _Sources:
    """Maps a key path of the merged recipe to the user's path where that value was written."""

    def __init__(self, method: str, layers: Sequence[_Layer], default: str) -> None:
        self.method, self.layers, self.default = method, layers, default

    def path(self, loc: Sequence[Any]) -> str:
        dotted = ".".join(str(p) for p in loc)
        for layer in self.layers:
            if (
                layer.path.startswith("train.")
                and len(loc) >= 2
                and loc[0] == "optimizer"
                and loc[1] in OPTIMIZER_SHORTCUTS
                and loc[1] in layer.data
            ):
                return f"{layer.path}.{'.'.join(str(p) for p in loc[1:])}"
            if _lookup(layer.data, loc):
                return f"{layer.path}.{dotted}" if dotted else layer.path
        return f"{self.default}.{dotted}" if dotted else self.default


def _first_error(err: ValidationError, data: Mapping[str, Any], sources: _Sources) -> RecipeError:
    errors = err.errors()  # of a union's member errors, the one reaching deepest into the data
    first = max(errors, key=lambda e: len(_data_loc(e["loc"], data)))
    loc = _data_loc(first["loc"], data)
    msg = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "missing":
        return RecipeError(f"{sources.path(loc)}: missing; add it to the recipe")
    shown = first.get("input")
    got = f" (got {shown!r})" if not isinstance(shown, Mapping) and shown is not None else ""
    return RecipeError(f"{sources.path(loc)}: {msg[:1].lower()}{msg[1:]}{got}")


def _chain(method: str, recipes: Mapping[str, Any], name: str) -> list[tuple[str, Mapping[str, Any]]]:
    """``name`` and the recipes it extends, most derived first; a cycle or unknown parent is one error."""
    seen: list[str] = []
    current: Any = name
    while current is not None:
        if not isinstance(current, str):
            raise RecipeError(f"recipes.{method}.{seen[-1]}.extends: expected a recipe name, got {current!r}")
        if current in seen:
            cycle = " → ".join([*seen[seen.index(current) :], current])
            raise RecipeError(f"recipes.{method}.{seen[-1]}.extends: cycle {cycle}; remove one of these extends")
        if current not in recipes:
            where = f"recipes.{method}.{seen[-1]}.extends" if seen else f"recipes.{method}"
            raise _unknown_recipe(where, method, current, recipes)
        layer = recipes[current]
        if not isinstance(layer, Mapping):
            raise RecipeError(f"recipes.{method}.{current}: expected a mapping of recipe keys")
        seen.append(current)
        current = layer.get("extends")
    return [(n, recipes[n]) for n in seen]


def _unknown_recipe(where: str, method: str, name: object, recipes: Mapping[str, Any]) -> RecipeError:
    close = difflib.get_close_matches(str(name), list(recipes), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"choose one of: {', '.join(recipes)}"
    return RecipeError(f"{where}: unknown recipe {name!r} for {method}; {hint}")


def _check_method(section: str, method: str) -> MethodCard:
    """The card of ``method``; an unregistered name under ``section`` (train/recipes) is one error."""
    from segrepro.models.registry import get_card, list_methods

    known = list_methods()
    if method not in known:
        close = difflib.get_close_matches(str(method), known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"choose one of: {', '.join(known)}"
        raise RecipeError(f"{section}.{method}: unknown method; {hint}")
    return get_card(method)


def _check_meaning(recipe: Recipe, card: MethodCard, sources: _Sources) -> None:
    """The checks one field alone cannot make: names that must exist, and keys that must fit the objective."""
    from segrepro.data import DATASETS
    from segrepro.models.registry import list_variants

    def fail(loc: tuple[Any, ...], message: str) -> RecipeError:
        return RecipeError(f"{sources.path(loc)}: {message}")

    if recipe.dataset not in DATASETS:
        close = difflib.get_close_matches(recipe.dataset, list(DATASETS), n=1)
        raise fail(
            ("dataset",),
            f"unknown dataset {recipe.dataset!r}; "
            + (f"did you mean {close[0]}?" if close else f"choose one of: {', '.join(DATASETS)}"),
        )
    splits = DATASETS[recipe.dataset].all_splits
    for key in ("train_split", "val_split"):
        if getattr(recipe, key) not in splits:
            raise fail(
                (key,), f"{recipe.dataset} has no split {getattr(recipe, key)!r}; choose one of: {', '.join(splits)}"
            )
    for split, protocol in recipe.eval.items():
        if split not in splits:
            raise fail(("eval", split), f"{recipe.dataset} has no split {split!r}; choose one of: {', '.join(splits)}")
        if protocol.resize is not None and protocol.resize[0] > protocol.resize[1]:
            raise fail(("eval", split, "resize"), "give [short side, long-side cap] with short ≤ long")
    variants = list_variants(recipe.method)
    if recipe.variant is not None and recipe.variant not in variants:
        raise fail(
            ("variant",),
            f"unknown variant {recipe.variant!r} for {recipe.method}; choose one of: {', '.join(variants)}",
        )
    if recipe.normalization not in NORMALIZATIONS:
        raise fail(
            ("normalization",),
            f"unknown normalization {recipe.normalization!r}; choose one of: {', '.join(NORMALIZATIONS)}",
        )
    if (recipe.iterations is None) == (recipe.epochs is None):
        raise fail(("iterations",), "give exactly one of iterations and epochs (set the other to null)")
    if recipe.per_gpu_batch is None and recipe.batch_size % recipe.gpus:
        raise fail(
            ("gpus",), f"batch_size {recipe.batch_size} is not a multiple of gpus {recipe.gpus}; give per_gpu_batch"
        )
    scale = recipe.scale
    if scale is not None and (scale.choices is None) == (scale.range is None):
        raise fail(("scale",), "give exactly one of choices: [start, stop, step] and range: [lo, hi]")
    if scale is not None and scale.choices is not None and scale.aspect is not None:
        raise fail(("scale", "aspect"), "aspect goes with range, not with choices")
    if scale is not None and scale.choices is not None and scale.choices[0] > scale.choices[1]:
        raise fail(("scale", "choices"), "start must not exceed stop")
    if scale is not None and scale.range is not None and scale.range[0] > scale.range[1]:
        raise fail(("scale", "range"), "lo must not exceed hi")
    opt = recipe.optimizer
    if opt.name == "adamw" and (opt.momentum is not None or opt.nesterov is not None):
        raise fail(("optimizer", "momentum"), "adamw has no momentum; remove the key or use name: sgd")
    if opt.name == "sgd" and (opt.momentum is None or opt.nesterov is None):
        raise fail(("optimizer", "momentum"), "sgd needs momentum and nesterov (not null)")
    if recipe.objective != card.objective:
        raise fail(("objective",), f"{recipe.method} is {card.objective}; its model cannot train {recipe.objective}")
    if recipe.self_supervised:
        for loc, wrong in (
            (("loss",), recipe.loss is not None),
            (("scale",), recipe.scale is not None),
            (("flip",), recipe.flip),
            (("brightness",), recipe.brightness != 0),
            (("train_min_side",), recipe.train_min_side is not None),
            (("optimizer", "poly_power"), opt.poly_power is not None),
            (("optimizer", "head_lr_mult"), opt.head_lr_mult != 1.0),
        ):
            if wrong:
                raise fail(loc, "not used by the self-supervised objective (multi-crop views, step lr); remove it")
        if opt.step_epochs is None or opt.gamma is None or recipe.negative_pressure is None:
            raise fail(
                ("optimizer", "step_epochs"),
                "the self-supervised objective needs step_epochs, gamma and negative_pressure (not null)",
            )
        return
    for loc, value in ((("optimizer", "step_epochs"), opt.step_epochs), (("optimizer", "gamma"), opt.gamma)):
        if value is not None:
            raise fail(loc, "step decay belongs to the self-supervised objective; supervised recipes use poly_power")
    if opt.poly_power is None:
        raise fail(("optimizer", "poly_power"), "missing; the supervised poly schedule needs it")
    if recipe.negative_pressure is not None:
        raise fail(("negative_pressure",), "only the self-supervised objective uses it; remove it")
    if recipe.loss is None:
        raise fail(("loss",), "missing; a supervised recipe needs loss.terms")
    if recipe.scale is None:
        raise fail(("scale",), "missing; a supervised recipe needs scale augmentation")
    for i, term in enumerate(recipe.loss.terms):
        if term.output not in card.outputs:
            raise fail(
                ("loss", "terms", i, "output"),
                f"{recipe.method} returns no output {term.output!r}; choose one of: {', '.join(card.outputs)}",
            )
    weights = recipe.loss.class_weights
    classes = recipe.model_num_classes()
    if weights is not None and len(weights) != classes:
        raise fail(("loss", "class_weights"), f"{len(weights)} weights for {classes} classes")


def _validate(merged: Mapping[str, Any], card: MethodCard, sources: _Sources) -> Recipe:
    try:
        recipe = Recipe.model_validate(merged)
    except ValidationError as err:
        raise _first_error(err, merged, sources) from None
    _check_meaning(recipe, card, sources)
    return recipe


def _resolve(params: Mapping[str, Any], method: str, name: str, local: Mapping[str, Any]) -> Recipe:
    recipes = (params.get("recipes") or {}).get(method)
    card = _check_method("recipes", method)
    if not recipes:
        known = ", ".join(params.get("recipes") or {}) or "none"
        raise RecipeError(f"params.yaml has no recipes for method {method!r} (known: {known})")
    chain = _chain(method, recipes, name)
    for layer_name, layer in chain:
        check_keys(layer, Recipe, f"recipes.{method}.{layer_name}", allowed=("extends",), refused=_LAYER_REFUSED)
    check_keys(local, Recipe, f"train.{method}", allowed=("recipe", *OPTIMIZER_SHORTCUTS), refused=_LAYER_REFUSED)
    merged: dict[str, Any] = {}
    for depth, (_, layer) in reversed(list(enumerate(chain))):
        skip = ("extends", *NOT_INHERITED) if depth else ("extends",)
        merged = deep_merge(merged, {k: v for k, v in layer.items() if k not in skip})
    if merged.get("twin_of") and not merged.get("paper"):  # a CPU twin records its official twin's number
        merged["paper"] = merge_chain(recipes, method, str(merged["twin_of"])).get("paper")
    for key, value in card.recipe_defaults().items():
        merged.setdefault(key, value)
    over = {k: v for k, v in local.items() if k != "recipe" and k not in OPTIMIZER_SHORTCUTS}
    shortcuts = {k: local[k] for k in OPTIMIZER_SHORTCUTS if k in local}
    if shortcuts:
        over = deep_merge(over, {"optimizer": shortcuts})
    merged = deep_merge(merged, over)
    merged.update(method=method, recipe=name)
    if merged.get("variant") is None:  # the record names the variant that is really built
        from segrepro.models.registry import get_spec

        merged["variant"] = get_spec(method).variant
    layers = [_Layer(f"train.{method}", local), *(_Layer(f"recipes.{method}.{n}", d) for n, d in chain)]
    sources = _Sources(method, layers, f"recipes.{method}.{name}")
    recipe = _validate(merged, card, sources)
    if recipe.init_from is not None:
        _check_init_from(params, recipe, sources)
    return recipe


def _check_init_from(params: Mapping[str, Any], recipe: Recipe, sources: _Sources) -> None:
    """``init_from`` names another recipe that exists (a chain of stages, never the recipe itself)."""
    where = sources.path(("init_from",))
    method, _, name = recipe.init_from.partition("/") if recipe.init_from else ("", "", "")
    if not method or not name:
        raise RecipeError(f"{where}: expected <method>/<recipe>, got {recipe.init_from!r}")
    recipes = (params.get("recipes") or {}).get(method) or {}
    if name not in recipes:
        raise _unknown_recipe(where, method, name, recipes)
    if (method, name) == (recipe.method, recipe.recipe):
        raise RecipeError(f"{where}: a recipe cannot start from its own weights; name the previous stage")


def _local(params: Mapping[str, Any], method: str) -> Mapping[str, Any]:
    local = (params.get("train") or {}).get(method) or {}
    if not isinstance(local, Mapping):
        raise RecipeError(f"train.{method}: expected a mapping such as {{recipe: demo}}")
    return local


def resolve(params: Mapping[str, Any], method: str, recipe: str | None = None) -> Recipe:
    """The validated recipe of ``method``: the named recipe (default ``train.<method>.recipe``, else the
    first) ← card defaults ← ``train.<method>`` overrides."""
    local = _local(params, method)
    recipes = (params.get("recipes") or {}).get(method) or {}
    name = recipe or local.get("recipe") or next(iter(recipes), None)
    if name is None:
        _check_method("recipes", method)
        known = ", ".join(params.get("recipes") or {}) or "none"
        raise RecipeError(f"params.yaml has no recipes for method {method!r} (known: {known})")
    if name not in recipes:
        where = f"train.{method}.recipe" if not recipe and local.get("recipe") else "--recipe"
        raise _unknown_recipe(where, method, name, recipes)
    return _resolve(params, method, str(name), local)


class SynthCfg(_Frozen):
    """One ``synth.<dataset>`` entry: the embedded synthetic dataset."""

    size: str | None = None
    split_sizes: str | dict[str, int] | None = None
    seed: int = 0


class BenchmarkRow(_Frozen):
    """One ``benchmark.<method>-<recipe>`` row: a train/evaluate branch of dvc.yaml (runs/<row>).

    ``after`` is the file the row's training waits for and DVC reruns it on (dvc.yaml cannot list a dep
    for some rows only): the ``model.pt`` of the row that trains the recipe's ``init_from``, otherwise the
    prepared data. :func:`check_rows` says which. ``nproc`` is how many DDP processes ``dvc repro`` starts for
    the row's training (``segrepro train --nproc``): GPUs on a GPU machine, cores on CPU.
    """

    method: str
    recipe: str
    dataset: str
    after: str
    nproc: int = Field(gt=0)


def row_after(rows: Mapping[str, Any], name: str, recipe: Recipe) -> str:
    """What ``benchmark.<name>.after`` must be: runs/<method>-<recipe>/model.pt of the first stage, which
    must be a row itself (``segrepro train`` looks for its weights beside the row's run folder)."""
    if recipe.init_from is None:
        return f"data/{recipe.dataset}_prepared"
    first = recipe.init_from.replace("/", "-")
    method, _, name_of = recipe.init_from.partition("/")
    row = rows.get(first)
    if not isinstance(row, Mapping) or (row.get("method"), row.get("recipe")) != (method, name_of):
        raise RecipeError(
            f"benchmark.{name}: recipe {recipe.method}/{recipe.recipe} starts from {recipe.init_from} "
            f"(init_from); add the row {first}: {{method: {method}, recipe: {name_of}, dataset: "
            f"{recipe.dataset}, after: ...}} to benchmark"
        )
    return f"runs/{first}/model.pt"


def check_rows(params: Mapping[str, Any]) -> None:
    """Every benchmark row names a recipe that resolves, on its dataset, with the right ``after``."""
    rows = params.get("benchmark") or {}
    for name, row in rows.items():
        recipe = resolve(params, row["method"], row["recipe"])
        if row["dataset"] != recipe.dataset:
            raise RecipeError(
                f"benchmark.{name}.dataset: {row['dataset']!r}, but recipe {recipe.method}/"
                f"{recipe.recipe} trains on {recipe.dataset!r}; write dataset: {recipe.dataset}"
            )
        expected = row_after(rows, name, recipe)
        if row["after"] != expected:
            why = "the first stage's weights" if recipe.init_from else "its prepared data"
            raise RecipeError(f"benchmark.{name}.after: {row['after']!r}; write after: {expected} ({why})")


class SubmitRow(_Frozen):
    """One ``submit.<row>`` entry: the row whose Cityscapes test-server archive is built."""

    method: str
    recipe: str


class UnsupportedResult(_Frozen):
    """A published number no recipe can reproduce here, with the reason (`segrepro recipes` lists it)."""

    method: str
    recipe: str
    dataset: str
    paper: PaperCfg
    reason: str


class ParamsFile(_Frozen):
    """The top level of params.yaml (``train`` and ``recipes`` are checked against :class:`Recipe`)."""

    benchmark: dict[str, BenchmarkRow] = {}
    submit: dict[str, SubmitRow] = {}
    unsupported: list[UnsupportedResult] = []
    data: dict[str, str] = {}
    synth: dict[str, SynthCfg] = {}
    prepare: list[str] = []
    train: dict[str, Any] = {}
    recipes: dict[str, dict[str, Any]] = {}


def validate_params(params: Mapping[str, Any]) -> None:
    """Check the whole file: top-level keys and sections, every recipe of every method (standalone) and
    each method's active recipe with its ``train.<method>`` overrides."""
    check_keys(params, ParamsFile, "")
    try:
        ParamsFile.model_validate(params)
    except ValidationError as err:
        first = err.errors()[0]
        loc = _data_loc(first["loc"], params) or tuple(first["loc"][:1])
        raise RecipeError(f"{'.'.join(str(p) for p in loc)}: {first['msg'][:1].lower()}{first['msg'][1:]}") from None
    for method in params.get("train") or {}:
        _check_method("train", method)
    for method, recipes in (params.get("recipes") or {}).items():
        _check_method("recipes", method)
        for name in recipes:
            _resolve(params, method, name, {})
    for method in params.get("train") or {}:
        if (params.get("recipes") or {}).get(method):
            resolve(params, method)
    check_rows(params)


def load_record(data: Any, where: str) -> Recipe:
    """A run's recorded recipe (config.yaml or a checkpoint's ``config``), validated against today's schema."""
    if not isinstance(data, Mapping) or "method" not in data:
        raise RecipeError(f"{where}: not a segrepro run config (no method); retrain, or pass --recipe")
    card = _check_method(f"{where}: method", str(data["method"]))
    return _validate(data, card, _Sources(str(data["method"]), [_Layer(where, data)], where))


def differences(a: Recipe, b: Recipe, limit: int = 3) -> list[str]:
    """``key: old → new`` for the first ``limit`` flattened keys that differ."""
    fa, fb = a.flat_params(), b.flat_params()
    keys = [k for k in dict.fromkeys([*fa, *fb]) if fa.get(k) != fb.get(k)]
    shown = [f"{k}: {fa.get(k)!r} → {fb.get(k)!r}" for k in keys[:limit]]
    return shown + ([f"… {len(keys) - limit} more"] if len(keys) > limit else [])
