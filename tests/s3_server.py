"""A real S3 server for the tests: the project's own radosgw script, started once per session.

Tests that need S3 request ``s3_env``: it yields the server's variables (endpoint, test keys) and sets
them in ``os.environ`` for that test only. The daemons are stopped by PID when the session ends.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import free_port

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
MISSING_BINARY = 3  # exit code of s3-server-up.sh when a Ceph binary is not installed


def _parse_exports(text: str) -> dict[str, str]:
    """``export K=V`` lines printed by the script → {K: V}."""
    env = {}
    for line in text.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            key, value = parts[1].split("=", 1)
            env[key] = value
    return env


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start radosgw on 127.0.0.1 (free ports); yields its environment variables."""
    workdir = tmp_path_factory.mktemp("radosgw")
    proc = subprocess.run(
        ["bash", str(SCRIPTS / "s3-server-up.sh"), str(workdir), str(free_port()), str(free_port())],
        capture_output=True, text=True, timeout=300,
    )
    if proc.returncode == MISSING_BINARY:
        pytest.skip(f"no S3 server: {proc.stderr.strip()}")
    if proc.returncode != 0:
        logs = "\n".join(p.read_text()[-1500:] for p in sorted((workdir / "log").glob("*.out")))
        raise RuntimeError(f"s3-server-up.sh failed ({proc.returncode}): {proc.stderr.strip()}\n{logs}")
    try:
        yield _parse_exports(proc.stdout)
    finally:
        subprocess.run(["bash", str(SCRIPTS / "s3-server-down.sh"), str(workdir)], capture_output=True, timeout=60)


@pytest.fixture()
def s3_env(s3_server: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The server's endpoint and keys in this test's environment (boto3, DVC and MLflow read them)."""
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_server["AWS_ENDPOINT_URL"])
    # Never fall back to a developer's ~/.aws files or an instance role.
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server
