"""Every registered (method, variant) honours the forward contract of :class:`SegOutput`.

Tiny variants: train-mode forward + backward and eval forward on 2×3×64×64, train vs eval outputs, and the
main-only forward (aux heads not run, the same ``main``).
Official variants: build + eval forward at a small legal input (their train-mode head is the tiny one's
code, and their numbers are checked against the official fixtures in each method's own test).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from segrepro.errors import UserError
from segrepro.models import MAIN_ONLY, SegOutput, build, get_spec, list_methods, list_variants, main_logits

CASES = [(m, v) for m in list_methods() for v in list_variants(m)]
SIDE = 64  # every method accepts it (GALD resizes its stride-2 chains up; the ViT needs a multiple of 16)


def _check_map(t: Tensor, n: int, classes: int, stride: int, size: tuple[int, int], what: str) -> None:
    assert t.dim() == 4 and t.shape[:2] == (n, classes), f"{what}: shape {tuple(t.shape)}"
    for got, full in zip(t.shape[-2:], size):
        # conv/pool chains round up (ceil-mode max-pool adds at most one row), never down
        ok = math.floor(full / stride) <= got <= math.ceil(full / stride) + 1
        assert ok, f"{what}: {got} px at stride {stride} of {full}"
    assert torch.isfinite(t).all(), f"{what}: NaN/inf"


def _check_output(out: SegOutput, n: int, classes: int, size: tuple[int, int]) -> None:
    assert isinstance(out, SegOutput)
    _check_map(out.main, n, classes, out.stride, size, "main")
    assert set(out.aux) == set(out.aux_strides), "every aux output needs its stride"
    for name, t in out.aux.items():
        _check_map(t, n, t.shape[1], out.aux_strides[name], size, f"aux {name}")
    for name, t in out.extras.items():
        assert torch.isfinite(t.float()).all(), f"extras {name}: NaN/inf"


@pytest.mark.parametrize(("method", "variant"), CASES, ids=[f"{m}-{v}" for m, v in CASES])
def test_forward_contract(method: str, variant: str) -> None:
    torch.manual_seed(0)
    spec = get_spec(method, variant)
    classes = spec.default_num_classes
    tiny = variant == "tiny"
    side, n = SIDE, (2 if tiny else 1)
    x = torch.randn(n, 3, side, side)
    model = build(method, variant=variant)

    model.eval()
    with torch.no_grad():
        eval_out = model(x)
    _check_output(eval_out, n, classes, (side, side))
    if not tiny:
        return

    model.train()
    train_out = model(x)
    _check_output(train_out, n, classes, (side, side))
    assert eval_out.stride == train_out.stride
    assert set(eval_out.aux) <= set(train_out.aux), "eval aux outputs are a subset of the training ones"
    loss = train_out.main.square().mean() + sum(t.square().mean() for t in train_out.aux.values())
    loss.backward()
    trainable = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    assert trainable, "a tiny model must have trainable parameters"
    no_grad = [k for k, p in trainable if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for _, p in trainable)


def test_registry_lists_all_six_methods_with_tiny_variants() -> None:
    assert list_methods() == ["alignseg", "acfnet", "gald", "dgcnet", "ann", "alignseg_ssl"]
    for method in list_methods():
        assert "tiny" in list_variants(method)
        assert get_spec(method).variant != "tiny", f"{method}'s default variant must be an official one"


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(UserError, match=r"unknown method 'pspnet'; choose one of: alignseg, acfnet"):
        build("pspnet")
    with pytest.raises(UserError, match=r"unknown variant 'r152' for gald; choose one of: .*r101.*tiny"):
        build("gald", variant="r152")


def test_models_command_lists_every_registered_variant(capsys: pytest.CaptureFixture[str]) -> None:
    from segrepro.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["models"])
    assert exc.value.code in (0, None)
    rows = [line.split()[:2] for line in capsys.readouterr().out.splitlines()]
    assert rows == [[m, v] for m, v in CASES]


# The heads that only aux outputs need, by method (GALD/DGCNet run ``dsn`` in train mode only).
AUX_HEADS = {"alignseg": ("dsn",), "acfnet": ("auxlayer",), "gald": ("dsn",), "dgcnet": ("dsn",), "ann": ("dsn",),
             "alignseg_ssl": ()}


@pytest.mark.parametrize("method", list_methods())
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_main_only_forward_skips_aux_heads_and_keeps_main(method: str, mode: str) -> None:
    torch.manual_seed(0)
    model = build(method, variant="tiny").train(mode == "train")
    heads = AUX_HEADS[method]
    calls = dict.fromkeys(heads, 0)
    for name in heads:
        getattr(model, name).register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        torch.manual_seed(1)
        full = model(x)
        ran = dict(calls)
        torch.manual_seed(1)
        main = main_logits(model, x)
        only = model(x, outputs=MAIN_ONLY)
    assert calls == ran, f"main-only forward ran {[k for k in heads if calls[k] != ran[k]]}"
    assert only.aux == {} and only.aux_strides == {}
    if mode == "eval":  # train mode: dropout draws differ once a head is skipped
        assert torch.equal(main, full.main)
        assert torch.equal(only.main, full.main)
    if mode == "train" and heads:
        assert all(ran[k] == 1 for k in heads), "the full train forward runs every aux head"
