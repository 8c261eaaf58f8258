"""S3 storage for DVC data and MLflow artifacts, configured only from the environment.

Where: ``AWS_ENDPOINT_URL`` (or ``MLFLOW_S3_ENDPOINT_URL``, which MLflow reads) points at any
S3-compatible server (radosgw, MinIO, AWS itself when unset); ``SEGREPRO_S3_BUCKET`` and
``SEGREPRO_S3_PREFIX`` name the place. Who: credentials come from boto3's normal chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, instance roles) and are never
read, logged or written here, so they cannot end up in committed DVC config or in MLflow params.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segrepro.errors import UserError

ENDPOINT_VARS = ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL")
DEFAULT_BUCKET = "segrepro"
DEFAULT_PREFIX = "dvc"


@dataclass(frozen=True)
class S3Settings:
    """Endpoint and location of the project's bucket; holds no secrets, so it is safe to print."""

    endpoint: str | None
    bucket: str
    prefix: str = DEFAULT_PREFIX

    @classmethod
    def from_env(cls, bucket: str | None = None, prefix: str | None = None) -> S3Settings:
        endpoint = next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)
        return cls(
            endpoint=endpoint,
            bucket=bucket or os.environ.get("SEGREPRO_S3_BUCKET") or DEFAULT_BUCKET,
            prefix=(prefix if prefix is not None else os.environ.get("SEGREPRO_S3_PREFIX", DEFAULT_PREFIX)).strip("/"),
        )

    def url(self, *parts: str) -> str:
        """``s3://bucket/prefix/parts...`` (the DVC remote URL, or an MLflow artifact root)."""
        path = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"


def s3_client(settings: S3Settings) -> Any:
    """A boto3 S3 client for the endpoint; fails with one line when no credentials are configured."""
    import boto3

    session = boto3.session.Session()
    if session.get_credentials() is None:
        raise UserError(
            "no S3 credentials found: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE); "
            "for the local test server, `source runs/s3/s3.env` after `make s3-up`"
        )
    return session.client("s3", endpoint_url=settings.endpoint)


def ensure_bucket(settings: S3Settings) -> bool:
    """Create the bucket unless it exists (DVC and MLflow do not create it); True when created."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = s3_client(settings)
    where = settings.endpoint or "AWS"
    try:
        client.head_bucket(Bucket=settings.bucket)
        return False
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code not in {"404", "NoSuchBucket", "NotFound"}:
            raise UserError(
                f"S3 bucket {settings.bucket!r} at {where} is not accessible ({code}); check the credentials"
            ) from None
    except BotoCoreError as err:
        raise UserError(f"S3 endpoint {where} is unreachable ({type(err).__name__}); check AWS_ENDPOINT_URL") from None
    client.create_bucket(Bucket=settings.bucket)
    return True


def _dvc(repo: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise UserError(f"`dvc {' '.join(args[:3])}` failed in {repo}: {last[0]}")


def configure_dvc_remote(repo: Path, settings: S3Settings, name: str = "s3remote", default: bool = True) -> str:
    """Point DVC remote ``name`` at the bucket; returns its URL.

    The URL goes to ``.dvc/config`` (shared by the team); the endpoint, which differs per machine,
    goes to ``.dvc/config.local`` (git-ignored). Credentials are not written anywhere: dvc-s3 takes
    them from the same environment as boto3.
    """
    url = settings.url()
    _dvc(repo, "remote", "add", "--force", *(["--default"] if default else []), name, url)
    if settings.endpoint:
        _dvc(repo, "remote", "modify", "--local", name, "endpointurl", settings.endpoint)
    return url
