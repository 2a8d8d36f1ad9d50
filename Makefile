# Everything a fresh clone needs: `make run` runs the training flow, `make test` runs the tests.
# Both install what is missing first (a virtual environment, the project, the default dataset in
# data/fashion-mnist: from the DVC remote, else from Debian's package) and are idempotent: a second
# call installs nothing.

VENV      := .venv
BIN       := $(VENV)/bin
PYTHON    ?= python3
STAMP     := $(VENV)/.installed
DATA      := data/fashion-mnist
DEBIAN_DATA ?= /usr/share/datasets/fashion-mnist
CHROMIUM  := /usr/bin/chromium

export PATH := $(CURDIR)/$(BIN):$(PATH)
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_HOME ?= $(CURDIR)/.prefect

# Shared servers (see docs/scaling.md); all listen on 127.0.0.1 only.
MLFLOW_SERVER_PORT  ?= 5050
MLFLOW_SERVER_STORE ?= $(CURDIR)/.mlflow-server
MLFLOW_ARTIFACTS    ?= $(MLFLOW_SERVER_STORE)/artifacts
OBJECT_STORE_PORT   ?= 8333
OBJECT_STORE_DIR    ?= $(CURDIR)/.object-store
OBJECT_STORE_BUCKET ?= attention-pipeline
PREFECT_PORT        ?= 4200
SERVE_PORT          ?= 5001
SERVE_MODEL         ?= models:/attention-classifier@champion
DEMO_PORT           ?= 7860
DOCS_PORT           ?= 8000

.PHONY: setup lint debian-fashion-mnist demo run run-gpu repro tune test bench bench-smoke docs docs-serve mlflow-ui mlflow-server object-store prefect-server prefect-worker schedule serve clean

setup: $(STAMP) $(DATA)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# The default dataset, pinned by data/fashion-mnist.dvc: `dvc pull`, else a copy of Debian's files
# (exit status 2 from fetch_data: neither has it, so install the package and try again).
$(DATA): | $(STAMP)
	@$(BIN)/python -m pipeline.fetch_data --debian $(DEBIAN_DATA) || { [ $$? = 2 ] && \
	  $(MAKE) -s debian-fashion-mnist && $(BIN)/python -m pipeline.fetch_data --debian $(DEBIAN_DATA); }

# apt-get install a Debian package, as root or through sudo; otherwise say what to run.
APT_INSTALL = if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO=sudo; else \
	  echo "error: $(1) is missing: run 'sudo apt-get install $(1)' (Debian/Ubuntu), then 'make' again" >&2; \
	  exit 1; fi; \
	$$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends $(1)

debian-fashion-mnist:
	@$(call APT_INSTALL,dataset-fashion-mnist)

# The browser the page's test drives (Playwright cannot download its own here).
$(CHROMIUM):
	@$(call APT_INSTALL,chromium fonts-liberation)

run: setup
	python -m flows.training

run-gpu: setup
	python -m flows.training --preset params.gpu.yaml

repro: setup
	dvc repro

tune: setup
	dvc repro preprocess
	python -m pipeline.tune $(TUNE_ARGS)

# What the project says it enforces, CI fails on: lint rules and the formatter (pyproject.toml), then the tests.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The tests run in TEST_WORKERS processes (pytest-xdist), a whole file to each, so a file's shared
# fixtures are built once; the 25 slowest are listed at the end, for whoever keeps CI under 25 minutes.
# pytest-xdist hands out the files with the most tests first. The slowest files first was tried on two
# cores (2026-12-07): no faster, as both cores stay busy to the end either way, and more long tests at once.
# Three on two cores: a quarter of a two-worker run's time was spent waiting (servers starting,
# subprocesses, disk), and a third worker fills it. With more processes than cores, OpenMP threads
# that spin while they wait (its default) take the CPU another process needs; passive ones sleep
# (three trainings at once on two cores: 57 s → 31 s; bench.speed.oversubscribed, BENCHMARKS.md).
TEST_WORKERS ?= 3
test: setup $(CHROMIUM) lint
	OMP_WAIT_POLICY=PASSIVE $(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --durations=25

bench: setup
	python -m bench.run

# What would break `make bench`, found in under a minute on a tiny generated project (tests run it too).
bench-smoke: setup
	python -m bench.run --smoke

# The documentation site, built into site/ (strict: a broken link or anchor fails the build) or served.
docs: setup
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 mkdocs serve -a 127.0.0.1:$(DOCS_PORT)

mlflow-ui: setup
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# Artifacts to a folder (default) or an object store: MLFLOW_ARTIFACTS=s3://BUCKET/PREFIX with
# MLFLOW_S3_ENDPOINT_URL and AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY; those are checked before it starts.
mlflow-server: setup
	mkdir -p $(MLFLOW_SERVER_STORE)
	@case "$(MLFLOW_ARTIFACTS)" in s3://*) python -m pipeline.object_store check "$(MLFLOW_ARTIFACTS)";; esac
	mlflow server --backend-store-uri sqlite:///$(MLFLOW_SERVER_STORE)/mlflow.db \
	  --artifacts-destination $(MLFLOW_ARTIFACTS) --host 127.0.0.1 --port $(MLFLOW_SERVER_PORT) --workers 1

# An S3-compatible object store (SeaweedFS) for the DVC remote and MLflow's artifacts (docs/object-store.md):
# http://127.0.0.1:$(OBJECT_STORE_PORT), keys from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, data in $(OBJECT_STORE_DIR).
object-store: setup
	python -m pipeline.object_store serve --dir "$(OBJECT_STORE_DIR)" --port $(OBJECT_STORE_PORT) \
	  --bucket $(OBJECT_STORE_BUCKET)

prefect-server: setup
	prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

prefect-worker: setup
	PREFECT_API_URL=$${PREFECT_API_URL:-http://127.0.0.1:$(PREFECT_PORT)/api} python -m flows.worker

schedule: setup
	python -m flows.schedule

# The registry's champion over HTTP: POST {"inputs": ["<base64 image file>", ...]} to /invocations.
serve: setup
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} \
	  python -m pipeline.serve --model "$(SERVE_MODEL)" --host 127.0.0.1 --port $(SERVE_PORT)

# A web page to try the model on your pictures and see its attention (Gradio): http://127.0.0.1:$(DEMO_PORT)
demo: setup
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///$(CURDIR)/mlflow.db} GRADIO_ANALYTICS_ENABLED=False \
	  python -m pipeline.demo --port $(DEMO_PORT)

clean:
	rm -rf data/processed data/manifest.csv models metrics plots reports
