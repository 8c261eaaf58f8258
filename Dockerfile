# segrepro image: the CLI (and so every Kubeflow component) on a CUDA PyTorch runtime.
# BASE_IMAGE must already hold torch 2.13.0 (the project pin); it is reused, never reinstalled.
# BUILD_IMAGE compiles the optional inplace-abn (needs nvcc: the -devel twin of BASE_IMAGE).
# Provenance of the tags: Docker Hub's official pytorch/pytorch repository, which tags each PyTorch release
# <torch>-cuda<X.Y>-cudnn<N>-{runtime,devel}. The tag is derived from that scheme and the torch pin; it was
# neither pulled nor digest-checked here (no registry is reachable from this workplace), so check that it
# exists and pin its digest (@sha256:...) before a release build. `make image-test` builds this same file
# on a local CPU base instead.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
ARG BUILD_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-devel

FROM ${BUILD_IMAGE} AS build
ARG INPLACE_ABN=0
# Optional CA bundle path inside the context (offline builds behind a TLS proxy); empty: system CAs.
ARG PIP_CERT=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CERT=${PIP_CERT}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY . .
# A venv that sees the base image's CUDA torch; the CPU torch pin is dropped from the constraints.
RUN python3 -m venv --system-site-packages /opt/segrepro \
 && grep -v '^torch==' requirements/constraints.txt > /tmp/constraints.txt \
 && /opt/segrepro/bin/pip install --no-cache-dir -c /tmp/constraints.txt '.[all]' \
 && if [ "${INPLACE_ABN}" = "1" ]; then \
      /opt/segrepro/bin/pip install --no-cache-dir -c /tmp/constraints.txt setuptools-scm wheel ninja \
      && /opt/segrepro/bin/pip install --no-cache-dir --no-build-isolation inplace-abn==1.1.0; \
    fi \
 && /opt/segrepro/bin/python -c "import torch, segrepro.cli, segrepro_pipelines.cli, segrepro_components.container; print('torch', torch.__version__)"

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="segrepro" \
      org.opencontainers.image.description="Reproducibility pipeline for semantic segmentation (CLI + Kubeflow components)" \
      org.opencontainers.image.licenses="Apache-2.0"
# No credentials here: MLflow and S3 settings come from Kubernetes secrets as env at run time.
# numba caches its compiled metric kernel; /tmp stays writable under a read-only root filesystem.
ENV PATH=/opt/segrepro/bin:${PATH} PYTHONUNBUFFERED=1 MLFLOW_DISABLE_TELEMETRY=true \
    NUMBA_CACHE_DIR=/tmp/numba-cache
RUN useradd --create-home --uid 1000 --shell /bin/bash segrepro
COPY --from=build /opt/segrepro /opt/segrepro
WORKDIR /home/segrepro/work
COPY --chown=1000:1000 params.yaml ./
USER 1000:1000
ENTRYPOINT ["segrepro"]
CMD ["--help"]
