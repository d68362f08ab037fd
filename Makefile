# Hades developer commands. `make run` runs the whole system locally; `make test` runs the test suite.
# Both create .venv and install the project on first use.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-k8s test-deploy lint typecheck bench clean image manifests manifests-check

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## nats-server + submit (8080) + logs (8081) + dispatch (8082); Ctrl-C stops all
	bash tools/install_docker.sh
	$(BIN)/python tools/run_local.py

test: $(STAMP) manifests-check  ## the whole suite (Docker tests skip without an engine, except when CI=true)
	$(BIN)/pytest

test-k8s: $(STAMP)  ## the Kubernetes tests (marker k8s) on the cluster of KUBECONFIG; tools/k8s_up.sh starts one
	@test -n "$$KUBECONFIG" || { echo "set KUBECONFIG, e.g.: K8S_LOCAL=/var/lib/hades-k8s tools/k8s_up.sh && export KUBECONFIG=/var/lib/hades-k8s/admin.kubeconfig"; exit 2; }
	$(BIN)/pytest -m k8s

test-deploy: $(STAMP) image  ## the dev overlay applied into the cluster of KUBECONFIG; jobs through its Services, KEDA emulated
	@test -n "$$KUBECONFIG" || { echo "set KUBECONFIG, e.g.: K8S_LOCAL=/var/lib/hades-k8s tools/k8s_up.sh && export KUBECONFIG=/var/lib/hades-k8s/admin.kubeconfig"; exit 2; }
	$(BIN)/pytest -m deploy tests/deploy

image: $(STAMP)  ## the Hades image hades:dev (IMAGE=…) and the dev overlay's NATS image hades-nats:dev (NATS_IMAGE=…)
	PYTHON=$(BIN)/python bash tools/build_image.sh

manifests: $(STAMP)  ## regenerate kustomize/components/monitoring from manifests/ (Prometheus rules, dashboard)
	$(BIN)/python tools/manifests_check.py sync

manifests-check: $(STAMP)  ## render every overlay and component combination with kustomize v5, validate all
	$(BIN)/python tools/manifests_check.py check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) .hades .pytest_cache .ruff_cache .mypy_cache *.egg-info
