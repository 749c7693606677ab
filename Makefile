# Two commands do all the set-up: `make demo` and `make test`.
# Each creates .venv and installs raydet into it when it is missing or when
# pyproject.toml changed; otherwise they start at once.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.raydet-installed

.PHONY: install test demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "raydet needs Python 3.10 or newer; set PYTHON=python3.x")'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --disable-pip-version-check --quiet -e '.[test]'
	touch $@

test: $(STAMP)
	$(VENV)/bin/python -m pytest

demo: $(STAMP)
	@echo "make demo trains a detector on the built-in shapes dataset; it arrives with the training engine (issue 5)." >&2
	@exit 1

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
