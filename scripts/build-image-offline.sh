#!/usr/bin/env bash
# Build the project Dockerfile without a Docker engine (podman, chroot isolation) and run
# `segrepro --help` in the result. The base is a Debian bookworm made with debootstrap plus the
# CPU torch wheel of the pin, passed as BASE_IMAGE/BUILD_IMAGE: the same Dockerfile as the CUDA
# image, only the base differs. Run by `make image-test`; needs root and the apt/PyPI registries.
#
#   scripts/build-image-offline.sh [WORK_DIR]    (TORCH_WHEEL=path/to/torch-2.13.0+cpu-cp311-*.whl)
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${1:-${TMPDIR:-/tmp}/segrepro-image}"
TAG="${IMAGE_TAG:-localhost/segrepro:offline}"
DEBIAN="localhost/segrepro-debian:bookworm"
BASE="localhost/segrepro-base:bookworm-torch"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
TORCH_PIN="$(grep '^torch==' "$REPO/requirements/constraints.txt" | cut -d= -f3)"
TORCH_WHEEL="${TORCH_WHEEL:-$(ls /opt/wheels/torch-"${TORCH_PIN}"-cp311-*.whl 2>/dev/null | head -n1 || true)}"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need podman || ! need debootstrap; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah debootstrap runc uidmap fuse-overlayfs slirp4netns
fi
[ -f "$TORCH_WHEEL" ] || { echo "error: set TORCH_WHEEL to the torch ${TORCH_PIN} cp311 wheel" >&2; exit 2; }
mkdir -p "$WORK"

# podman in this sandbox: runc (the default runtime fails on hybrid cgroups) and ulimits within ours.
export CONTAINERS_CONF="$WORK/containers.conf"
cat > "$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=1024:1024"]
[engine]
runtime = "runc"
CONF

if ! podman image exists "$DEBIAN"; then
  rm -rf "$WORK/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates bookworm "$WORK/rootfs"
  tar -C "$WORK/rootfs" -c . | podman import - "$DEBIAN"
fi

if ! podman image exists "$BASE"; then  # stands in for pytorch/pytorch: python + torch of the pin
  rm -rf "$WORK/base" && mkdir -p "$WORK/base"
  cp "$TORCH_WHEEL" "$WORK/base/" && cp "$CA_BUNDLE" "$WORK/base/ca-bundle.crt"
  cat > "$WORK/base/Containerfile" <<CONTAINERFILE
FROM $DEBIAN
COPY . /tmp/base
RUN PIP_CERT=/tmp/base/ca-bundle.crt python3 -m pip install --no-cache-dir --break-system-packages /tmp/base/$(basename "$TORCH_WHEEL") && rm -rf /tmp/base
CONTAINERFILE
  podman build --isolation=chroot -t "$BASE" "$WORK/base"
fi

cp "$CA_BUNDLE" "$REPO/ca-bundle.crt"
trap 'rm -f "$REPO/ca-bundle.crt"' EXIT
podman build --isolation=chroot --format docker \
  --build-arg BASE_IMAGE="$BASE" --build-arg BUILD_IMAGE="$BASE" --build-arg PIP_CERT=ca-bundle.crt \
  -t "$TAG" "$REPO"
podman run --rm "$TAG" --help
echo "image $TAG built; 'segrepro --help' ran inside it"
