"""GALD-Net's GALD block parts and pretrained loading; its fixtures and tiny contract are in test_model_contextnet.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segrepro.errors import MissingWeightsError, UserError
from segrepro.models import build
from segrepro.models.backbones.resnet import DEPTHS, ResNet
from segrepro.models.gald import LOCAL_MIN_SIZE, GALDBlock, LocalAttenModule, SpatialCGNL, at_least
from segrepro.models.gcn_blocks import ContextHead


def test_cgnl_matches_per_group_formula() -> None:
    """Per group: s = Σ_{c,h,w} p·g, x_group = s·t_group; then grouped z, GroupNorm, + residual."""
    torch.manual_seed(0)
    cgnl = SpatialCGNL(8, 4, groups=2).eval()
    x = torch.randn(2, 8, 45, 45)
    t, p, g = cgnl.t(x), cgnl.p(x), cgnl.g(x)
    groups = []
    for tg, pg, gg in zip(t.split(2, 1), p.split(2, 1), g.split(2, 1)):
        groups.append((pg * gg).sum(dim=(1, 2, 3)).view(-1, 1, 1, 1) * tg)
    expected = cgnl.gn(cgnl.z(torch.cat(groups, 1))) + x
    torch.testing.assert_close(cgnl(x), expected, rtol=1e-4, atol=1e-4)


def test_local_attention_is_u_plus_masked_u() -> None:
    """U + U·M with M = sigmoid(...) ∈ (0, 1): for positive U the output lies strictly in (U, 2U)."""
    torch.manual_seed(0)
    local = LocalAttenModule(8).eval()
    u = torch.rand(1, 8, 45, 45) + 0.5
    with torch.no_grad():
        out = local(u)
    assert out.shape == u.shape
    assert bool((out > u).all()) and bool((out < 2 * u).all())


def test_gald_block_returns_2u_plus_um() -> None:
    torch.manual_seed(0)
    block = GALDBlock(8, 4, groups=4).eval()
    x = torch.randn(2, 8, 45, 45)
    with torch.no_grad():
        a = block.long_relation(block.down(x))
        assert a.shape[-2:] == (22, 22)  # unpadded stride 2: (45 − 3) // 2 + 1
        u = torch.nn.functional.interpolate(a, size=(45, 45), mode="bilinear", align_corners=True)
        ratio = (block(x) - 2 * u) / u  # = M ∈ (0, 1)
    finite = u.abs() > 1e-3
    assert bool(((ratio[finite] > 0) & (ratio[finite] < 1)).all())


def test_small_maps_are_resized_not_crashing() -> None:
    """Official sizes pass untouched; below the legal minimum the block still runs at the input's size."""
    big = torch.randn(1, 8, LOCAL_MIN_SIZE, 40)
    assert at_least(big, LOCAL_MIN_SIZE) is big
    assert at_least(torch.randn(1, 8, 14, 40), LOCAL_MIN_SIZE).shape[-2:] == (15, 40)
    block = GALDBlock(8, 4, groups=4).eval()
    for size in (1, 2, 9):
        assert block(torch.randn(1, 8, size, size + 1)).shape == (1, 8, size, size + 1)


def test_head_shapes() -> None:
    head = ContextHead(16, 8, 5, "a2block", GALDBlock(8, 4, groups=4)).eval()
    assert head(torch.randn(2, 16, 45, 45)).shape == (2, 5, 45, 45)
    assert [k for k in head.state_dict() if k.startswith("a2block.down.")][0] == "a2block.down.0.weight"


def test_pretrained_file_loads_and_depth_mismatch_is_refused(tmp_path: Path) -> None:
    """The builder loads a local deep-stem file; an R50-depth file for R101 (the R101 script's bug) is refused."""
    tiny = build("gald", variant="tiny")
    backbone = {k: v for k, v in tiny.state_dict().items() if not k.startswith(("head.", "dsn."))}
    torch.save(backbone, tmp_path / "tiny-deep.pth")
    loaded = build("gald", variant="tiny", pretrained=str(tmp_path / "tiny-deep.pth"))
    torch.testing.assert_close(loaded.state_dict()["layer4.0.conv2.weight"], backbone["layer4.0.conv2.weight"])

    narrow50 = ResNet(DEPTHS[50], stem="sequential", widths=(8, 16, 32, 64), stem_widths=(8, 8, 16))
    torch.save(narrow50.state_dict(), tmp_path / "resnet50-deep.pth")
    with pytest.raises(UserError, match="depth mismatch"):
        build("gald", variant="r101", pretrained=str(tmp_path / "resnet50-deep.pth"))
    with pytest.raises(MissingWeightsError):
        build("gald", variant="tiny", pretrained=str(tmp_path / "missing.pth"))
