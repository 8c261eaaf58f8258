"""``segrepro checkpoint import/export``: wrappers peeled, strict verification, lossless round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from segrepro.cli import main
from segrepro.errors import UserError
from segrepro.models import build
from segrepro.models.checkpoint import export_state_dict, import_checkpoint, unwrap, write_state_dict
from reference_fixtures import manifest_entries


def randomised(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """The model's state_dict with distinct values everywhere (shared tensors stay shared)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for v in model.state_dict().values():
            if v.is_floating_point():
                v.copy_(torch.randn(v.shape, generator=g))
    return model.state_dict()


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(args)
    out = capsys.readouterr()
    return int(ex.value.code or 0), out.out, out.err


def cli_import(
    capsys: pytest.CaptureFixture[str], method: str, src: Path, dst: Path, *extra: str
) -> tuple[int, str, str]:
    return run_cli(["checkpoint", "import", "--method", method, *extra, str(src), str(dst)], capsys)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def alignseg_tiny_sd() -> dict[str, torch.Tensor]:
    return randomised(build("alignseg", variant="tiny"))


@pytest.mark.parametrize(
    ("prefix", "container"),
    [("module.", "state_dict"), ("", "model"), ("module.", None), ("", None)],
)
def test_round_trip_through_official_wrappers(
    tmp_path: Path, alignseg_tiny_sd: dict[str, torch.Tensor], prefix: str, container: str | None
) -> None:
    write_state_dict(export_state_dict(alignseg_tiny_sd, prefix, container), tmp_path / "official.pth")
    res = import_checkpoint("alignseg", tmp_path / "official.pth", tmp_path / "ours.pth", variant="tiny")
    assert (res.method, res.variant, res.num_tensors) == ("alignseg", "tiny", len(alignseg_tiny_sd))
    assert_same(torch.load(tmp_path / "ours.pth", weights_only=True), alignseg_tiny_sd)


def test_cli_import_then_export_is_lossless(tmp_path: Path, alignseg_tiny_sd: dict, capsys) -> None:
    wrapped = {f"module.{k}": v for k, v in alignseg_tiny_sd.items()}
    torch.save({"state_dict": wrapped, "epoch": 3}, tmp_path / "a.pth")
    code, out, _ = cli_import(capsys, "alignseg", tmp_path / "a.pth", tmp_path / "b.pth", "--variant", "tiny")
    assert code == 0 and "verified" in out
    code, _, _ = run_cli(["checkpoint", "export", str(tmp_path / "b.pth"), str(tmp_path / "c.pth")], capsys)
    assert code == 0
    exported = torch.load(tmp_path / "c.pth", weights_only=True)
    assert_same(exported["state_dict"], wrapped)


def test_torchcv_net_prefix_and_shared_query_key(tmp_path: Path) -> None:
    sd = randomised(build("ann", variant="tiny"))
    shared = [k for k in sd if ".f_query." in k and sd[k].data_ptr() == sd[k.replace("f_query", "f_key")].data_ptr()]
    assert shared, "ANN's APNB lists f_query and f_key for one tensor"
    torch.save({"state_dict": {f"module.net.{k}": v.clone() for k, v in sd.items()}}, tmp_path / "ann.pth")
    import_checkpoint("ann", tmp_path / "ann.pth", tmp_path / "ours.pth", variant="tiny")
    assert_same(torch.load(tmp_path / "ours.pth", weights_only=True), sd)
    bad = {f"net.{k}": v.clone() for k, v in sd.items()}
    bad[f"net.{shared[0]}"] += 1.0  # a file whose f_query differs from f_key cannot be one model
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="tensors the model shares differ"):
        import_checkpoint("ann", tmp_path / "bad.pth", tmp_path / "never.pth", variant="tiny")
    assert not (tmp_path / "never.pth").exists()


def test_num_batches_tracked_is_optional(tmp_path: Path, alignseg_tiny_sd: dict) -> None:
    v10 = {k: v for k, v in alignseg_tiny_sd.items() if not k.endswith("num_batches_tracked")}  # inplace_abn v1.0
    write_state_dict(v10, tmp_path / "v10.pth")
    import_checkpoint("alignseg", tmp_path / "v10.pth", tmp_path / "ours.pth", variant="tiny")
    assert set(torch.load(tmp_path / "ours.pth", weights_only=True)) == set(alignseg_tiny_sd)


def test_broken_checkpoint_one_error_with_shapes_and_no_dst(tmp_path: Path, alignseg_tiny_sd: dict, capsys) -> None:
    broken = dict(alignseg_tiny_sd)
    del broken["conv1.weight"]
    broken["extra.weight"] = torch.zeros(2, 3)
    broken["bn1.running_var"] = torch.ones(7)
    write_state_dict({f"module.{k}": v for k, v in broken.items()}, tmp_path / "broken.pth")
    dst = tmp_path / "out" / "never.pth"
    code, out, err = cli_import(capsys, "alignseg", tmp_path / "broken.pth", dst, "--variant", "tiny")
    assert code != 0 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert "1 missing: conv1.weight [8, 3, 3, 3]" in err
    assert "1 unexpected: extra.weight [2, 3]" in err
    assert "1 wrong shape: bn1.running_var file [7] vs model [8]" in err
    assert not (tmp_path / "out").exists(), "nothing (not even a temp file) is written for a refused file"


def test_unknown_method_and_missing_file(tmp_path: Path, capsys) -> None:
    code, _, err = cli_import(capsys, "pspnet", tmp_path / "x.pth", tmp_path / "y.pth")
    assert code != 0 and "choose one of: alignseg" in err
    code, _, err = cli_import(capsys, "gald", tmp_path / "none.pth", tmp_path / "y.pth", "--variant", "tiny")
    assert code != 0 and "checkpoint not found" in err


def test_imagenet_backbone_file_becomes_a_pretrained_file(tmp_path: Path, capsys) -> None:
    model = build("ann", variant="tiny")
    mit = {k.removeprefix("prefix."): v.clone() for k, v in randomised(model.backbone).items()}
    mit["fc.weight"], mit["fc.bias"] = torch.zeros(10, 256), torch.zeros(10)
    src = tmp_path / "resnet-imagenet.pth"
    torch.save(mit, src)  # MIT layout: conv1..3/bn1..3 at top level
    code, _, err = cli_import(capsys, "ann", src, tmp_path / "full.pth", "--variant", "tiny")
    assert code != 0 and "pass --backbone" in err
    code, out, _ = cli_import(capsys, "ann", src, tmp_path / "bb.pth", "--variant", "tiny", "--backbone", "mit")
    assert code == 0 and "backbone tensors" in out
    converted = torch.load(tmp_path / "bb.pth", weights_only=True)
    assert torch.equal(converted["backbone.prefix.conv2.weight"], mit["conv2.weight"])
    rebuilt = build("ann", variant="tiny", pretrained=str(tmp_path / "bb.pth"))
    assert torch.equal(rebuilt.backbone.layer4[0].conv1.weight, mit["layer4.0.conv1.weight"])


def test_unwrap_peels_nested_wrappers_only_when_shared() -> None:
    t = torch.zeros(1)
    assert list(unwrap({"module.net.a": t, "module.net.b": t})) == ["a", "b"]
    assert list(unwrap({"net.a": t, "b": t})) == ["net.a", "b"]


def test_official_manifest_checkpoint_imports(tmp_path: Path, fixtures_dir: Path) -> None:
    """A checkpoint with exactly the official DGCNet-R50 names/shapes (DataParallel-wrapped) imports strictly."""
    entries = manifest_entries(fixtures_dir / "dgcnet" / "manifest_r50.json")
    dtypes = {"int64": torch.int64, "float32": torch.float32}
    sd = {f"module.{e['name']}": torch.zeros(e["shape"], dtype=dtypes[e["dtype"]]) for e in entries}
    torch.save({"state_dict": sd}, tmp_path / "dgcnet_r50.pth")
    res = import_checkpoint("dgcnet", tmp_path / "dgcnet_r50.pth", tmp_path / "ours.pth", variant="r50")
    assert res.num_tensors == len(entries)
