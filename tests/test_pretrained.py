"""Pretrained backbone files: key conversion between the three stem layouts, and every refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from segrepro.errors import MissingWeightsError, UserError
from segrepro.models import build
from segrepro.models.backbones.resnet import ResNet
from segrepro.models.pretrained import backbone_state, from_split_stem, load_backbone, resolve_path, to_split_stem

TINY = dict(widths=(8, 16, 32, 64), stem_widths=(8, 8, 16))


def tiny_resnet(layers=(1, 2, 1, 1), **kw) -> ResNet:
    return ResNet(layers, **TINY, **kw)


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """Distinct values in every tensor (running stats included) so a wrong mapping shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
    return model.eval()


def save_file(tmp_path: Path, model: nn.Module, name: str, wrap=lambda sd: sd) -> Path:
    sd = dict(model.state_dict())
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(10, 256), torch.zeros(10)  # ImageNet classifier, dropped
    path = tmp_path / name
    torch.save(wrap(sd), path)
    return path


class Wrapped(nn.Module):
    """ANN-style model: backbone nested under ``backbone.`` plus a head."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = tiny_resnet(stem="prefix")
        self.head = nn.Conv2d(256, 3, 1)


@pytest.mark.parametrize("file_stem", ["split", "sequential"])
@pytest.mark.parametrize("model_stem", ["split", "sequential", "prefix"])
def test_any_deep_stem_file_fills_any_layout(tmp_path: Path, file_stem: str, model_stem: str) -> None:
    src = randomised(tiny_resnet(stem=file_stem))
    source = "mit" if file_stem == "split" else "gald-deep"
    def data_parallel(sd: dict) -> dict:
        return {"state_dict": {f"module.{k}": v for k, v in sd.items()}}

    path = save_file(tmp_path, src, "file.pth", wrap=data_parallel)
    model = load_backbone(tiny_resnet(stem=model_stem), path, source).eval()
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(src(x)[3], model(x)[3])


def test_mit_file_into_prefix_backbone_of_wrapper(tmp_path: Path) -> None:
    src = randomised(tiny_resnet(stem="split"))
    model = Wrapped()
    head_before = model.head.weight.clone()
    load_backbone(model, save_file(tmp_path, src, "mit.pth"), "mit")
    assert torch.equal(model.backbone.prefix.conv1.weight, src.conv1.weight)
    assert torch.equal(model.backbone.prefix.bn3.running_var, src.bn3.running_var)
    assert torch.equal(model.backbone.layer3[0].conv2.weight, src.layer3[0].conv2.weight)
    assert torch.equal(model.head.weight, head_before)


def test_gald_deep_to_split_names(tmp_path: Path) -> None:
    src = randomised(tiny_resnet(stem="sequential"))
    model = load_backbone(tiny_resnet(stem="split"), save_file(tmp_path, src, "g.pth"), "gald-deep")
    assert torch.equal(model.conv2.weight, src.conv1[3].weight)
    assert torch.equal(model.bn2.running_mean, src.conv1[4].running_mean)
    assert torch.equal(model.bn3.weight, src.bn1.weight)  # GALD's 128-channel bn1 is the split bn3


def test_missing_file_names_file_source_and_place(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as err:
        load_backbone(tiny_resnet((3, 4, 23, 3), stem="sequential"), tmp_path, "gald-deep")
    msg = str(err.value)
    assert "resnet101-deep.pth" in msg and "GALD-DGCNet" in msg and str(tmp_path) in msg and "pretrained/" in msg
    with pytest.raises(MissingWeightsError, match="dino_deitsmall16_pretrain.pth"):
        resolve_path(tmp_path, "dino")
    with pytest.raises(MissingWeightsError, match="resnet101-imagenet.pth"):
        resolve_path(tmp_path / "nope.pth", "mit", 101)


def test_folder_resolves_standard_name(tmp_path: Path) -> None:
    src = randomised(tiny_resnet())
    save_file(tmp_path, src, "resnet101-imagenet.pth")
    # a non-standard depth falls back to the 101 name, which is what this folder holds
    assert resolve_path(tmp_path, "mit") == tmp_path / "resnet101-imagenet.pth"


def test_depth_mismatch_is_refused(tmp_path: Path) -> None:
    shallow = save_file(tmp_path, randomised(tiny_resnet((1, 1, 1, 1), stem="sequential")), "r50.pth")
    with pytest.raises(UserError, match="depth mismatch.*GALD-R101"):
        load_backbone(tiny_resnet((1, 1, 3, 1), stem="sequential"), shallow, "gald-deep")
    deep = save_file(tmp_path, randomised(tiny_resnet((1, 1, 3, 1))), "r101.pth")
    with pytest.raises(UserError, match="depth mismatch"):
        load_backbone(tiny_resnet((1, 1, 1, 1)), deep, "mit")


def test_eca_backbone_without_eca_weights_is_refused(tmp_path: Path) -> None:
    mit = save_file(tmp_path, randomised(tiny_resnet()), "mit.pth")
    with pytest.raises(UserError, match="eca.conv.*random init"):
        load_backbone(tiny_resnet(eca_kernel=3), mit, "eca")
    with_eca = randomised(tiny_resnet(eca_kernel=3))
    model = load_backbone(tiny_resnet(eca_kernel=3), save_file(tmp_path, with_eca, "eca.pth"), "eca")
    assert torch.equal(model.layer4[0].eca.conv.weight, with_eca.layer4[0].eca.conv.weight)


def test_seven_by_seven_stem_is_refused(tmp_path: Path) -> None:
    sd = dict(tiny_resnet().state_dict())
    for k in [k for k in sd if k.split(".")[0] in {"conv2", "bn2", "conv3", "bn3"}]:
        del sd[k]
    sd["conv1.weight"] = torch.zeros(8, 3, 7, 7)  # torchvision / BangguWu ECANet stem
    path = tmp_path / "eca_resnet.pth.tar"
    torch.save({"epoch": 1, "arch": "eca_resnet", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    with pytest.raises(UserError, match="7x7.*deep 3x3 stem"):
        load_backbone(tiny_resnet(eca_kernel=3), path, "eca")


def test_wrong_shapes_are_listed_with_shapes(tmp_path: Path) -> None:
    other = ResNet((1, 2, 1, 1), widths=(8, 16, 32, 32), stem_widths=(8, 8, 16))
    path = save_file(tmp_path, other, "w.pth")
    expected = r"wrong shape: layer4\.0\.conv1\.weight file \[32, 128, 1, 1\] vs model \[64, 128, 1, 1\]"
    with pytest.raises(UserError, match=expected):
        load_backbone(tiny_resnet(), path, "mit")


def test_dino_bare_keys_go_under_backbone(tmp_path: Path) -> None:
    class Vitish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential()
            self.backbone.add_module("patch_embed", nn.Conv2d(3, 4, 16, 16))
            self.backbone.add_module("norm", nn.LayerNorm(4))
            self.decoder = nn.Linear(4, 4)

    src = Vitish()
    sd = {k.removeprefix("backbone."): torch.rand_like(v) for k, v in src.backbone.state_dict().items()}
    torch.save({"model": {f"model.{k}": v for k, v in sd.items()}}, tmp_path / "dino.pth")
    model = load_backbone(Vitish(), tmp_path / "dino.pth", "dino")
    assert torch.equal(model.backbone.norm.weight, sd["norm.weight"])
    del sd["norm.bias"]
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"1 missing: backbone\.norm\.bias \[4\]"):
        load_backbone(Vitish(), tmp_path / "partial.pth", "dino")


def test_unreadable_file_and_unknown_source(tmp_path: Path) -> None:
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="cannot read"):
        load_backbone(tiny_resnet(), tmp_path / "junk.pth", "mit")
    with pytest.raises(UserError, match="choose one of: mit, gald-deep, eca, dino"):
        load_backbone(tiny_resnet(), tmp_path / "junk.pth", "imagenet")


# Which file each method's builder asks for, and that file's native stem layout.
BUILDER_SOURCES = {
    "alignseg": ("mit", "split"), "acfnet": ("eca", "split"), "gald": ("gald-deep", "sequential"),
    "dgcnet": ("gald-deep", "sequential"), "ann": ("mit", "split"), "alignseg_ssl": ("dino", None),
}


@pytest.mark.parametrize("method", list(BUILDER_SOURCES))
def test_builders_load_their_official_file_layout(tmp_path: Path, method: str) -> None:
    """``build(method, variant="tiny", pretrained=FILE)`` fills the whole backbone from a file in the native layout."""
    source, layout = BUILDER_SOURCES[method]
    donor = randomised(build(method, variant="tiny"))
    prefix, tensors = backbone_state(donor)
    native = {k.removeprefix(prefix): v for k, v in tensors.items()}
    if layout is not None:
        native = from_split_stem(to_split_stem(native), layout)
    torch.save({"state_dict": {f"module.{k}": v for k, v in native.items()}}, tmp_path / "file.pth")
    model = build(method, variant="tiny", pretrained=str(tmp_path / "file.pth"))
    mine = backbone_state(model)[1]
    assert mine.keys() == tensors.keys() and all(torch.equal(mine[k], tensors[k]) for k in tensors)
