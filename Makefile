# Two commands do all the set-up: `make demo` and `make test`.
# Each creates .venv and installs raydet into it when it is missing or when
# pyproject.toml changed; otherwise they start at once.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.raydet-installed

.PHONY: install test test-fast demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "raydet needs Python 3.10 or newer; set PYTHON=python3.x")'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check --quiet -e '.[test]'
	touch $@

# Everything, in two passes: the tests that need neither Ray nor long on all cores, then the Ray and slow ones
# one at a time on one shared Ray cluster (they time Ray's start-up and share 4 logical CPUs of a 2-core machine).
test: $(STAMP)
	$(VENV)/bin/ruff check raydet tests benchmarks
	$(VENV)/bin/python -m pytest -m "not slow and not ray" -n auto -p no:cacheprovider
	$(VENV)/bin/python -m pytest -m "slow or ray"

# The edit-test loop: everything but the tests that run through Ray or take long (CI runs those too).
test-fast: $(STAMP)
	$(VENV)/bin/ruff check raydet tests benchmarks
	$(VENV)/bin/python -m pytest -m "not slow and not ray" -n auto -p no:cacheprovider

# The demo: a tiny FCOS trained by 2 DDP workers on the built-in shapes dataset,
# evaluated with COCO metrics; about 6 minutes on a 2-core machine.
demo: $(STAMP)
	test -f data/shapes/annotations/train.json || $(VENV)/bin/python -m raydet.data.prepare shapes --out data/shapes
	$(VENV)/bin/python -m raydet.train configs/demo/fcos_tiny_shapes.yaml --work-dir work_dirs/demo

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
