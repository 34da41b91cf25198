# make book  — set up .venv, execute every notebook from scratch, build the site into _build/html
# make test  — set up .venv and Chromium, run pytest (library tests, nbval on every notebook, the site)
# make lab   — set up .venv, start JupyterLab on the book's chapters
# make lint  — ruff on the library, tests and scripts (120 columns) and on the notebooks (88 columns)
# make clean — remove build output and JupyterLab's checkpoints (keeps .venv)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The stamp is keyed on the content of requirements.txt and pyproject.toml: an edit reinstalls.
REQ_HASH := $(shell cat requirements.txt pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
# Notebook code is read on a page: 88 columns (the library's 120 would scroll sideways).
NOTEBOOK_LINE_LENGTH := 88
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: book test clean venv lint lab chromium

# $(call apt_install,package,what needs it): shell commands that install a Debian package as root or
# through sudo, or stop with one line naming the command to run.
apt_install = if [ "$$(id -u)" -eq 0 ]; then s=""; elif command -v sudo >/dev/null 2>&1; then s=sudo; \
	else echo "make: $(2) needs Debian's $(1) package: run 'apt-get install $(1)' as root, then make again" >&2; \
	exit 1; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	echo "make: $(2) needs $(1), and there is no apt-get here: install $(1), then make again" >&2; exit 1; fi; \
	echo "make: installing Debian's $(1) for $(2)"; \
	$$s apt-get update -qq && $$s env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(1)

venv: $(STAMP)

$(STAMP):
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { $(call apt_install,python3-venv,$(PYTHON) -m venv); }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $@

# The site test drives headless Chromium: CHROMIUM=/path if set, else chromium on the PATH, else Debian's package.
chromium:
	@if [ -n "$$CHROMIUM" ]; then \
	  [ -x "$$CHROMIUM" ] || { echo "make: CHROMIUM=$$CHROMIUM is not an executable file" >&2; exit 1; }; \
	elif ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then \
	  $(call apt_install,chromium,the site test); \
	fi

book: venv
	$(BIN)/jupyter-book build . --all -n -W --keep-going

test: venv chromium
	$(BIN)/python -m pytest -n auto --dist loadfile

lab: venv
	$(BIN)/jupyter lab book $(ALLOW_ROOT)

lint: venv
	$(BIN)/ruff check lib tests scripts
	$(BIN)/ruff check --line-length $(NOTEBOOK_LINE_LENGTH) book

clean:
	rm -rf _build .pytest_cache .hypothesis .ruff_cache .jupyter_cache
	find . -path ./$(VENV) -prune -o \( -name __pycache__ -o -name .ipynb_checkpoints \) -type d -print | xargs rm -rf
