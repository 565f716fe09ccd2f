# Two commands on a fresh machine (Python 3.11+ and PyPI):
#   make demo   set up .venv, run the whole pipeline on the embedded sample, tracked in MLflow
#   make test   set up .venv, run the tests (both tiers, as CI does)
#   make test-fast   the unit tier only (tests/unit: nothing trains, serves or starts services)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
export MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK ?= true
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast setup ui lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: setup
	$(BIN)/fsd main --config experiments/demo.yaml
	@echo
	@echo "Open the runs with:  make ui   (or $(BIN)/fsd ui --backend-store-uri $(MLFLOW_TRACKING_URI)),"
	@echo "then the link above, or:"
	@$(BIN)/python -c "from fsd.tracking import print_ui_urls; print_ui_urls()"

# The multinode tier (tests/e2e/multinode: a 2-node Ray cluster, PostgreSQL, S3, an mlflow
# server) spends most of its time waiting on its services and tasks (about one of two cores
# busy), so it runs beside the rest instead of after it; its report follows the rest's.
test: setup
	@mkdir -p .pytest-logs
	@$(BIN)/python -m pytest -q -p no:cacheprovider tests/e2e/multinode \
	    > .pytest-logs/multinode.log 2>&1 & multi=$$!; \
	$(BIN)/python -m pytest -q --ignore=tests/e2e/multinode; rest=$$?; \
	wait $$multi; multirc=$$?; \
	echo "== tests/e2e/multinode (ran beside the above)"; cat .pytest-logs/multinode.log; \
	test $$rest -eq 0 && test $$multirc -eq 0

test-fast: setup
	$(BIN)/python -m pytest -q tests/unit -m "not e2e"

lint: setup
	$(BIN)/python -m pip install -q -c constraints.txt ruff
	$(BIN)/ruff check --select E,F,W,I fsd tests benchmarks

# MLflow's UI, opening on the training runs wherever you enter (fsd/tracking/ui_app.py)
ui: setup
	$(BIN)/fsd ui --backend-store-uri $(MLFLOW_TRACKING_URI) --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs mlflow.db mlruns mlartifacts
