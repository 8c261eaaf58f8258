"""S3 against a real server (Ceph radosgw on 127.0.0.1): boto3, DVC push/pull, MLflow artifacts."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import boto3
import pytest

from segrepro.errors import UserError
from segrepro.tracking.storage import S3Settings, configure_dvc_remote, ensure_bucket, s3_client
from tests.s3_server import s3_env, s3_server  # noqa: F401  (fixtures)
from tests.servers import mlflow_server

pytestmark = pytest.mark.slow
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}


def admin_client(env: dict[str, str]):
    """A client holding the keys itself, so it keeps working after a test drops them from the env."""
    return boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")


def unique_bucket() -> str:
    return f"segrepro-{uuid.uuid4().hex[:10]}"


def run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **GIT_ENV})
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def dvc(*args: str, cwd: Path) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd)


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("SEGREPRO_S3_BUCKET", "team-bucket")
    monkeypatch.setenv("SEGREPRO_S3_PREFIX", "/data/")
    settings = S3Settings.from_env()
    assert settings == S3Settings(endpoint="http://127.0.0.1:9", bucket="team-bucket", prefix="data")
    assert settings.url("cache") == "s3://team-bucket/data/cache"
    assert S3Settings(None, "b", "").url() == "s3://b"


def test_no_credentials_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(UserError, match="no S3 credentials"):
        s3_client(S3Settings("http://127.0.0.1:9", "b"))


def test_boto3_round_trip_with_multipart(s3_env: dict[str, str]) -> None:
    settings = S3Settings.from_env(bucket=unique_bucket())
    assert ensure_bucket(settings) is True
    assert ensure_bucket(settings) is False  # idempotent
    client = s3_client(settings)
    client.put_object(Bucket=settings.bucket, Key="small.txt", Body=b"hello radosgw")
    assert client.get_object(Bucket=settings.bucket, Key="small.txt")["Body"].read() == b"hello radosgw"

    payload = os.urandom(11 * 2**20)  # three parts of at most 5 MiB
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20)
    client.upload_fileobj(io.BytesIO(payload), settings.bucket, "big.bin", Config=config)
    assert client.head_object(Bucket=settings.bucket, Key="big.bin")["ETag"].strip('"').endswith("-3")
    out = io.BytesIO()
    client.download_fileobj(settings.bucket, "big.bin", out)
    assert hashlib.sha256(out.getvalue()).digest() == hashlib.sha256(payload).digest()


def test_dvc_push_then_pull_into_fresh_clone(s3_env: dict[str, str], tmp_path: Path) -> None:
    settings = S3Settings.from_env(bucket=unique_bucket(), prefix="dvc")
    ensure_bucket(settings)
    repo = tmp_path / "repo"
    data = repo / "data" / "tiny"
    data.mkdir(parents=True)
    files = {"a.bin": os.urandom(4096), "b.txt": b"labels\n" * 50, "sub/c.bin": os.urandom(70_000)}
    for name, blob in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(blob)
    run(["git", "init", "-q", "-b", "main"], repo)
    dvc("init", "-q", cwd=repo)
    assert configure_dvc_remote(repo, settings) == f"s3://{settings.bucket}/dvc"
    dvc("add", "-q", "data/tiny", cwd=repo)
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "data"], repo)
    dvc("push", cwd=repo)

    committed = (repo / ".dvc" / "config").read_text()
    assert f"s3://{settings.bucket}/dvc" in committed and settings.endpoint not in committed
    assert s3_env["AWS_SECRET_ACCESS_KEY"] not in committed + (repo / ".dvc" / "config.local").read_text()
    stored = admin_client(s3_env).list_objects_v2(Bucket=settings.bucket, Prefix="dvc/")
    assert stored["KeyCount"] >= len(files) + 1  # every file plus the directory manifest

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / "data" / "tiny").exists()
    configure_dvc_remote(clone, settings)  # the endpoint lives in the git-ignored config.local
    dvc("pull", cwd=clone)
    for name, blob in files.items():
        assert (clone / "data" / "tiny" / name).read_bytes() == blob


def test_mlflow_artifacts_through_server_to_s3(s3_env: dict[str, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    settings = S3Settings.from_env(bucket=unique_bucket(), prefix="mlflow")
    ensure_bucket(settings)
    artifact = tmp_path / "per_class_iou.json"
    artifact.write_text('{"road": 0.97, "sky": 0.93}')
    with mlflow_server(tmp_path / "server", artifacts=settings.url()) as url:
        # Only the server holds the S3 keys; the client talks to the server alone.
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
            monkeypatch.delenv(key)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        client = MlflowClient(tracking_uri=url)
        exp = client.create_experiment("segrepro")
        run_id = client.create_run(exp, tags={"method": "alignseg"}).info.run_id
        client.log_artifact(run_id, str(artifact), artifact_path="eval")
        client.set_terminated(run_id)
        got = Path(client.download_artifacts(run_id, "eval/per_class_iou.json", str(tmp_path / "dl")))
        assert got.read_text() == artifact.read_text()

    keys = [o["Key"] for o in admin_client(s3_env).list_objects_v2(Bucket=settings.bucket)["Contents"]]
    assert any(k.startswith("mlflow/") and k.endswith(f"{run_id}/artifacts/eval/per_class_iou.json") for k in keys), keys
