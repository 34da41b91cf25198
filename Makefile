# make book  — set up .venv, execute every notebook from scratch, build the site into _build/html
# make test  — set up .venv, run pytest (library tests, nbval on every notebook, build test)
# make clean — remove build output (keeps .venv)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp is keyed on the content of requirements.txt and pyproject.toml: an edit reinstalls.
REQ_HASH := $(shell cat requirements.txt pyproject.toml | $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])")
STAMP := $(VENV)/.installed-$(REQ_HASH)

.PHONY: book test clean venv lint

venv: $(STAMP)

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

book: venv
	$(BIN)/jupyter-book build . --all -n -W --keep-going

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check lib tests scripts

clean:
	rm -rf _build .pytest_cache .hypothesis .ruff_cache .jupyter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print | xargs rm -rf
