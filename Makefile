# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SAMPLES := src/distillguard/samples
DEMO   := demo-out

.PHONY: demo test tools lint typecheck bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'" >&2; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo ingests the bundled samples (every supported log format, plus a file of
# deliberately broken records) and describes the store; then it simulates the labelled
# `demo` traffic, detects campaigns in it and measures the findings against the labels.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/distillguard ingest $(SAMPLES)/logs --store $(DEMO)/store
	$(BIN)/distillguard ingest $(SAMPLES)/batch --store $(DEMO)/store --set account_id=org-batch-demo
	$(BIN)/distillguard ingest $(SAMPLES)/mapped --store $(DEMO)/store --map-file $(SAMPLES)/gateway_export.mapping.yaml
	$(BIN)/distillguard ingest $(SAMPLES)/accounts --store $(DEMO)/store --table accounts
	$(BIN)/distillguard inspect $(DEMO)/store
	$(BIN)/distillguard simulate --scenario demo --out $(DEMO)/simulated
	$(BIN)/distillguard signup-risk --accounts $(DEMO)/simulated/accounts.parquet --top 5
	$(BIN)/distillguard detect $(DEMO)/simulated --out $(DEMO)/findings
	$(BIN)/distillguard eval --findings $(DEMO)/findings --labels $(DEMO)/simulated
	$(BIN)/distillguard report $(DEMO)/findings --out $(DEMO)/report.html --labels $(DEMO)/simulated
	$(BIN)/distillguard intel export $(DEMO)/findings --out $(DEMO)/bundle.json
	@echo "findings: $(DEMO)/findings (accounts.parquet, campaigns.json, exchanges.parquet)"
	@echo "report: $(DEMO)/report.html; STIX bundle to share: $(DEMO)/bundle.json"

# What the tests run for real, from Debian's packages when missing: Java for Spark's
# local mode, headless Chromium for the report, redis-server for the gateway's replicas.
TOOLS := java:openjdk-17-jre-headless chromium:chromium redis-server:redis-server
tools:
	@missing=""; for t in $(TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing for the tests:$$missing"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; } \
	  || { echo "error: could not install$$missing; install them (Debian packages) and retry" >&2; exit 2; }; \
	fi

test: $(STAMP) tools
	$(BIN)/python -m ruff check src tests benchmarks
	$(BIN)/python -m ruff format --check src tests benchmarks
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q

# The scale suite (issue 5): 1M to 30M simulated exchanges, scan floor, MinHash against
# datasketch, DuckDB against Spark local mode. Hours on 2 cores; results in
# benchmarks/results/. The other benchmarks are listed in the README.
bench: $(STAMP) tools
	$(BIN)/python benchmarks/detect_scale.py --days 1,3,10,30 --spark-days 1

clean:
	rm -rf $(VENV) $(DEMO) test-artifacts .pytest_cache .mypy_cache .ruff_cache
