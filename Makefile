# DETR-family detectron2 extension: setup / test / quickstart / bench / lint.
#
#   make setup            create $(VENV), install torch, detectron2 and this project (idempotent)
#   make test             fast tests (not marked slow)
#   make test-full        all tests
#   make PYTHON=python3.12 setup    choose the interpreter that creates the venv

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
PY = $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=
STAMP = $(VENV)/.setup-stamp
PACKAGES = detr_core cond_detr dab_detr smca_detr sam_detr

.PHONY: setup test test-full quickstart bench bench-speed bench-convergence lint clean distclean

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-run only when the recipe inputs change (or a package appears: the editable install maps
# the packages that exist when it runs); a second `make setup` is a no-op.
$(STAMP): setup.py tools/install_detectron2.py $(wildcard $(PACKAGES:%=%/__init__.py)) | $(PY)
	@$(PY) -c "import torch, torchvision" 2>/dev/null \
		&& echo "torch: keeping installed $$($(PY) -c 'import torch; print(torch.__version__)')" \
		|| $(PY) -m pip install $(TORCH_SPEC)
	$(PY) tools/install_detectron2.py
	$(PY) -m pip install -e '.[test]'
	@touch $@

test: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests $(PYTEST_ARGS)

test-full: setup
	$(PY) -m pytest -q -p no:cacheprovider tests $(PYTEST_ARGS)

quickstart: setup
	$(PY) tools/quickstart.py

bench: bench-speed bench-convergence

bench-speed: setup
	$(PY) tools/benchmark_speed.py

bench-convergence: setup  # the documented race: 7 variants, 3 seeds, two runs at a time
	$(PY) tools/benchmark_convergence.py --seeds 0 1 2 --jobs 2 --max-iter 1500 --thresholds 10 20 30

lint: setup
	@if $(PY) -m ruff --version >/dev/null 2>&1; then $(PY) -m ruff check .; \
	else echo "ruff is not installed in $(VENV) (pip install -e '.[test]')"; exit 1; fi

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
