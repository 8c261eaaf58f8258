"""AlignSeg (TPAMI'21): official keys and numbers, head blocks at toy sizes, the offset-warp conventions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_fixtures import assert_manifest_keys, assert_matches, load_input, load_manifest_weights

from segrepro.models import build
from segrepro.models.alignseg_blocks import CAB, CAM, RRB, offset_warp


@pytest.fixture(scope="module")
def fixture_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "alignseg"


@pytest.fixture(scope="module")
def r101(fixtures_dir: Path, fixture_dir: Path) -> torch.nn.Module:
    """The official configuration filled with the init-rule weights from the manifest names."""
    meta = json.loads((fixture_dir / "meta.json").read_text())
    model = build("alignseg", variant="r101")
    load_manifest_weights(model, fixtures_dir, fixture_dir / "manifest.json", gain=meta["init_gain"])
    return model.eval()


def _plain_sample(x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Zero-offset reference built independently: the identity affine grid is linspace(-1, 1)."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3).expand(n, 2, 3)
    grid = F.affine_grid(theta, [n, c, *(size or (h, w))], align_corners=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _identity_delta(n: int, h: int, w: int) -> torch.Tensor:
    """Offsets (half-pixels) that move the align_corners=False base grid exactly onto the pixel centres."""
    j = torch.arange(w, dtype=torch.float64)
    i = torch.arange(h, dtype=torch.float64)
    dx = 2 * (j + 0.5 - j * w / (w - 1))
    dy = 2 * (i + 0.5 - i * h / (h - 1))
    delta = torch.stack((dx.expand(h, w), dy[:, None].expand(h, w)))
    return delta.to(torch.float32).expand(n, 2, h, w)


def _randomise_offsets(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for name, p in model.named_parameters():
        if name.endswith(("delta_gen.2.weight", "delta_gen1.2.weight", "delta_gen2.2.weight")):
            p.data = torch.randn(p.shape, generator=gen)


def test_manifest_keys(r101: torch.nn.Module, fixture_dir: Path) -> None:
    assert_manifest_keys(r101, fixture_dir / "manifest.json")


def test_fixture_main_and_dsn(r101: torch.nn.Module, fixture_dir: Path) -> None:
    with torch.no_grad():
        out = r101(load_input(fixture_dir / "input.npy"))
    assert out.stride == 4 and out.aux_strides == {"dsn": 4}
    assert_matches(out.main, fixture_dir / "output.npy")
    assert_matches(out.aux["dsn"], fixture_dir / "aux_dsn.npy")


def test_fixture_rejects_initial_release_order(r101: torch.nn.Module, fixture_dir: Path) -> None:
    """The fixture input is non-square, so the legacy Δ order must visibly change the logits."""
    warps = [m for m in r101.modules() if isinstance(m, (CAB, CAM))]
    for m in warps:
        m.legacy_order = True
    try:
        with torch.no_grad():
            out = r101(load_input(fixture_dir / "input.npy")).main
    finally:
        for m in warps:
            m.legacy_order = False
    ref = torch.from_numpy(np.load(fixture_dir / "output.npy"))
    assert float((out - ref).abs().max() / ref.abs().max()) > 0.05


def test_delta_generators_start_at_zero() -> None:
    model = build("alignseg", variant="tiny")
    last = [p for n, p in model.named_parameters() if ".delta_gen" in n and n.endswith(".2.weight")]
    assert len(last) == 9  # CAM + 4 CABs × 2
    assert all(bool((p == 0).all()) for p in last)


def test_rrb_shape_and_residual() -> None:
    torch.manual_seed(0)
    rrb = RRB(6, 8).eval()
    x = torch.randn(2, 6, 45, 45)
    y = rrb(x)
    assert y.shape == (2, 8, 45, 45)
    # With the residual branch silenced the block is exactly norm(unify(x)).
    torch.nn.init.zeros_(rrb.residual[2].weight)
    assert torch.allclose(rrb(x), rrb.norm(rrb.unify(x)))
    assert not torch.allclose(y, rrb(x))


def test_cab_zero_offsets_is_plain_interpolation_sum() -> None:
    torch.manual_seed(0)
    cab = CAB(4).eval()
    low, high = torch.randn(2, 4, 45, 45), torch.randn(2, 4, 12, 12)
    high_up = F.interpolate(high, size=(45, 45), mode="bilinear", align_corners=True)
    expected = _plain_sample(high_up) + _plain_sample(low)
    assert torch.allclose(cab(low, high), expected, atol=1e-6)


def test_cab_offsets_move_the_output() -> None:
    torch.manual_seed(0)
    cab = CAB(4).eval()
    low, high = torch.randn(1, 4, 45, 45), torch.randn(1, 4, 12, 12)
    before = cab(low, high)
    torch.nn.init.normal_(cab.delta_gen1[2].weight)
    after = cab(low, high)
    assert after.shape == before.shape and not torch.allclose(after, before)


def test_cam_shapes_and_zero_offset() -> None:
    torch.manual_seed(0)
    cam = CAM(8, 4).eval()
    x = torch.randn(2, 8, 45, 45)
    y = cam(x)
    assert y.shape == (2, 4, 45, 45)
    context = cam.pool(x)
    assert context.shape == (2, 4, 3, 3)
    assert torch.allclose(y, _plain_sample(context, (45, 45)) + cam.adapt(x), atol=1e-6)


def test_warp_zero_offset_attenuates_borders() -> None:
    """Δ = 0 is not the identity: align_corners=False plus zero padding halves the border rows/columns."""
    out = offset_warp(torch.ones(1, 1, 45, 45), (45, 45), torch.zeros(1, 2, 45, 45))
    assert torch.allclose(out[0, 0, 1:-1, 1:-1], torch.ones(43, 43))
    assert torch.allclose(out[0, 0, 0, 1:-1], torch.full((43,), 0.5))
    assert torch.allclose(out[0, 0, 0, 0], torch.tensor(0.25))


@pytest.mark.parametrize("h, w", [(45, 45), (21, 45)])
def test_warp_identity_offsets_reproduce_input(h: int, w: int) -> None:
    """Δ channel 0 is x over the sampled width, channel 1 is y over its height (HEAD order)."""
    x = torch.randn(2, 3, h, w)
    out = offset_warp(x, (h, w), _identity_delta(2, h, w))
    assert torch.allclose(out, x, atol=1e-4)


def test_warp_orders_agree_on_square_differ_on_non_square() -> None:
    torch.manual_seed(0)
    square, wide = torch.randn(1, 3, 45, 45), torch.randn(1, 3, 21, 45)
    d_square, d_wide = torch.randn(1, 2, 45, 45), torch.randn(1, 2, 21, 45)
    for x, d, expect_equal in ((square, d_square, True), (wide, d_wide, False)):
        size = (x.shape[-2], x.shape[-1])
        same = torch.allclose(offset_warp(x, size, d), offset_warp(x, size, d, legacy_order=True))
        assert same == expect_equal


def test_model_orders_agree_on_square_input_only() -> None:
    head = build("alignseg", variant="tiny")
    _randomise_offsets(head)
    legacy = build("alignseg", variant="tiny", legacy_offset_order=True)
    legacy.load_state_dict(head.state_dict())
    head.eval()
    legacy.eval()
    with torch.no_grad():
        sq = torch.randn(1, 3, 64, 64)
        assert torch.equal(head(sq).main, legacy(sq).main)
        wide = torch.randn(1, 3, 64, 96)
        assert not torch.allclose(head(wide).main, legacy(wide).main)


def test_tiny_forward_backward() -> None:
    model = build("alignseg", variant="tiny", num_classes=5).train()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    # conv s2 → 32, ceil-mode maxpool → ceil(31/2)+1 = 17 at stride 4.
    assert out.main.shape == (2, 5, 17, 17) and out.aux["dsn"].shape == (2, 5, 17, 17)
    assert out.stride == 4 and set(out.aux) == {"dsn"}
    (out.main.mean() + 0.1 * out.aux["dsn"].mean()).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert torch.isfinite(out.main).all()
    model.eval()
    with torch.no_grad():
        assert set(model(x).aux) == {"dsn"}


def test_tiny_loads_a_split_stem_backbone_file(tmp_path: Path) -> None:
    source = build("alignseg", variant="tiny")
    backbone = {k: v for k, v in source.state_dict().items() if k.startswith(("conv", "bn", "layer"))}
    backbone = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in backbone.items()}
    path = tmp_path / "resnet-tiny.pth"
    torch.save({**backbone, "fc.weight": torch.zeros(3, 64 * 4)}, path)
    model = build("alignseg", variant="tiny", pretrained=str(path))
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in backbone.items())
