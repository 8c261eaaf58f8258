# Two set-up commands: `make demo` and `make test`. Both create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
S3_DIR ?= runs/s3
S3_PORT ?= 7480

.PHONY: install demo test lint bench clean s3-up s3-down image-test

DEMO_STAMP := $(VENV)/.installed-demo

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c requirements/constraints.txt -e '.[test]'  # [test] = every extra ([all]) plus the test tools
	touch $(STAMP) $(DEMO_STAMP)

# `make demo` installs only what `dvc repro` runs (the pipeline extra: MLflow, DVC, boto3; no kfp, no test tools).
$(DEMO_STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q -c requirements/constraints.txt -e '.[pipeline]'
	touch $(DEMO_STAMP)

install: $(STAMP)

# The main job on the embedded default: synthetic data → train → evaluate → submission → leaderboard,
# every method, on CPU, through `dvc repro` (see dvc.yaml / params.yaml).
demo: $(DEMO_STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro
	@echo; echo "== val mIoU per benchmark row (training's quick single-scale check; runs/<row>) =="
	@for f in runs/*/train_summary.json; do $(PY) -c 'import json,sys,os; s=json.load(open(sys.argv[1])); print("%-26s val mIoU %.3f" % (os.path.basename(os.path.dirname(sys.argv[1])), s["val_mIoU"]))' $$f; done
	@echo; echo "Leaderboard: leaderboard/leaderboard.md (also .html, .csv); MLflow UI: make ui"

# The tests, then lint (ruff check, ruff format --check, mypy on src/segrepro): both run, any finding fails.
test: $(STAMP)
	rc=0; $(PY) -m pytest -q || rc=1; $(MAKE) --no-print-directory lint || rc=1; exit $$rc

# Style and types of the package (configured in pyproject.toml); runs every tool and fails on any finding.
lint: $(STAMP)
	rc=0; $(VENV)/bin/ruff check src/segrepro || rc=1; $(VENV)/bin/ruff format --check src/segrepro || rc=1; \
	$(VENV)/bin/mypy src/segrepro || rc=1; exit $$rc

# A local S3 server (Ceph radosgw, RAM only, 127.0.0.1) with the project's bucket; keys in $(S3_DIR)/s3.env.
s3-up: $(STAMP)
	scripts/s3-server-up.sh $(S3_DIR) $(S3_PORT)
	. $(S3_DIR)/s3.env && $(PY) -c 'from segrepro.tracking.storage import S3Settings, ensure_bucket as e; s = S3Settings.from_env(); e(s); print("bucket ready:", s.url())'
	@echo "run: source $(S3_DIR)/s3.env"

s3-down:
	scripts/s3-server-down.sh $(S3_DIR)

# Builds the Dockerfile with podman (no Docker engine) and runs `segrepro --help` in it; not in `make test`.
image-test:
	scripts/build-image-offline.sh

clean:
	rm -rf $(VENV) runs

# --- reproducible pipeline (dvc.yaml) and tracking UI ---------------------------------------------
# DVC_REMOTE: an S3 remote configured from the environment (see README "Reproducible pipeline").
DVC_REMOTE ?= s3remote

.PHONY: repro push pull ui dvc-deps
repro: $(STAMP)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/dvc repro

# Rewrites every stage's src/segrepro deps in dvc.yaml from its command's import graph.
dvc-deps: $(STAMP)
	$(PY) -m segrepro.depgraph --write

push: $(STAMP)
	$(VENV)/bin/dvc push -r $(DVC_REMOTE)

pull: $(STAMP)
	$(VENV)/bin/dvc pull -r $(DVC_REMOTE)

ui: $(STAMP)
	$(VENV)/bin/segrepro ui
