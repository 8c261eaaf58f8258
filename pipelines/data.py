"""Moving data in and out of Kubeflow artifacts: the raw dataset into the prepare step, and the
collected evaluation artifacts into one runs folder for the leaderboard."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from segrepro.errors import UserError

# An evaluated run: <artifact>/{train_summary.json, config.yaml, eval/eval_summary.json, ...}.
EVAL_SUMMARY = "eval/eval_summary.json"
TRAIN_FILES = ("train_summary.json", "config.yaml")


def _replace_dir(tmp: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)


def fetch_data(source: str, dst: Path) -> Path:
    """Copy a dataset root (local/PVC path or ``s3://bucket/prefix``) to ``dst``, all or nothing.

    S3 uses boto3's usual configuration (AWS_* env from a Kubernetes secret, AWS_ENDPOINT_URL
    for a non-AWS server), so no credential ever appears in a pipeline parameter.
    """
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    if source.startswith("s3://"):
        _download_s3(source, tmp)
    else:
        src = Path(source)
        if not src.is_dir():
            raise UserError(f"{src}: dataset root not found; pass a folder on the mounted volume or an s3:// URI")
        shutil.copytree(src, tmp)
    _replace_dir(tmp, dst)
    return dst


def _download_s3(uri: str, dst: Path) -> None:
    import boto3
    from tqdm import tqdm

    bucket, _, prefix = uri[len("s3://"):].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    client = boto3.client("s3")
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
        if not obj["Key"].endswith("/")
    ]
    if not keys:
        raise UserError(f"{uri}: no objects under this prefix; upload the dataset root there first")
    for key in tqdm(keys, desc=f"download {uri}", unit="file"):
        target = dst / key[len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(bucket, key, str(target))


def artifact_paths(rendered: str) -> list[str]:
    """Local paths of a rendered ``{{$.inputs.artifacts['x']}}`` list (JSON with ``uri`` fields).

    kfp's launcher mounts ``s3://b/k`` at ``/s3/b/k`` (likewise gs://, minio://); kfp's own
    Artifact class does that mapping, so it is reused rather than restated.
    """
    from kfp.dsl import Artifact

    def uris(node: Any) -> Iterable[str]:
        if isinstance(node, dict):
            if isinstance(node.get("uri"), str):
                yield node["uri"]
            else:
                for value in node.values():
                    yield from uris(value)
        elif isinstance(node, list):
            for value in node:
                yield from uris(value)

    try:
        parsed = json.loads(rendered)
    except json.JSONDecodeError as err:
        raise UserError(f"artifact list is not JSON ({err}); pass kfp's rendered input artifact list") from err
    return [Artifact(uri=u).path for u in uris(parsed)]


def collect_runs(results: Sequence[str | os.PathLike[str]], dst: Path) -> Path:
    """Link each evaluated run (an evaluate step's Metrics artifact: the train summary and config
    plus ``eval/``) as ``dst/<method>``, the runs layout ``segrepro leaderboard`` reads.

    The method comes from ``eval/eval_summary.json``, not from list order. Nothing is copied.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for path in (Path(p) for p in results):
        method = _method_of(path / EVAL_SUMMARY)
        if method is None:
            raise UserError(f"{path}: no {EVAL_SUMMARY} with a method field; did the evaluate step finish?")
        link = dst / method
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(path.resolve(), target_is_directory=True)
    return dst


def _method_of(summary: Path) -> str | None:
    try:
        data = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
    method = data.get("method") if isinstance(data, dict) else None
    return method if isinstance(method, str) else None
