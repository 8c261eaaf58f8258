"""Moving data into Kubeflow artifacts: the raw dataset into the prepare step, and which run files the
evaluate step carries along (the collect step and the leaderboard read them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from segrepro.errors import UserError

# An evaluated run: <artifact>/{train_summary.json, config.yaml, eval/...}; these come from the Model artifact.
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

