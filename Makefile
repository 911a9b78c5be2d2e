# make setup  → .venv with pinned packages, bubblewrap (when root), Fashion-MNIST in .data/
# make lint   → ruff and mypy (configured in pyproject.toml)
# make test   → the whole test suite: tests/unit, tests/kernels (real kernels, tiny data), tests/browser
# make test-fast → tests/unit without the TensorFlow import test (no kernels; about a minute on 2 idle cores)
# make grade  → grade submissions/ into build/kadai8/ with the standard budget
# make selfcheck → regenerate assignments/kadai8/selfcheck.py (the students' one-file self-check)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
JOBS   ?= 2
BUDGET ?= standard
ASSIGNMENT ?= $(shell sed -n 's/^default_assignment *= *"\([^"]*\)".*/\1/p' assignments/course.toml)

.PHONY: setup venv system-packages data selfcheck-venv lint test test-fast test-kernels test-browser grade selfcheck clean lock

setup: system-packages venv data selfcheck-venv

venv: $(BIN)/.installed

$(BIN)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# System packages, installed only when we may (root with apt-get):
#   bubblewrap      isolates grading kernels
#   chromium        headless browser for the report test (tests/test_reports_browser.py)
#   fonts-noto-cjk  Japanese labels in report figures (without a CJK font they fall back to English)
SYSTEM_PACKAGES := bubblewrap chromium fonts-noto-cjk

system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	  command -v bwrap >/dev/null && echo "bubblewrap: $$(bwrap --version)"; \
	  command -v chromium >/dev/null && echo "chromium: $$(chromium --version 2>/dev/null)"; \
	  fc-list :lang=ja family | head -n 1 | sed 's/^/CJK font: /'; \
	else echo "system packages ($(SYSTEM_PACKAGES)): not installed (needs root and apt-get); see README"; fi

data: venv
	$(BIN)/grader data

# A venv with only Colab's packages, where the tests run the students' selfcheck.py.
selfcheck-venv: venv
	$(BIN)/python tests/selfcheck_venv.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: venv
	$(BIN)/python -m pytest

test-fast: venv
	$(BIN)/python -m pytest tests/unit -m "not slow"

test-kernels: venv
	$(BIN)/python -m pytest tests/kernels

test-browser: venv
	$(BIN)/python -m pytest tests/browser

grade: venv
	$(BIN)/grader grade --assignment $(ASSIGNMENT) --submissions submissions --out build/$(ASSIGNMENT) --budget $(BUDGET) --jobs $(JOBS)

# The file students download. Expected values come from the quick reference run on the real data
# (run once, cached); while the reference's sources are unchanged, the embedded ones are reused.
selfcheck: venv
	$(BIN)/python -m grader.selfcheck.bundle

lock: venv
	{ echo '# Exact versions `make setup` installs (pip freeze of a working venv, Python 3.11, x86_64).'; \
	  echo '# Regenerate with: make lock'; $(BIN)/python -m pip freeze --exclude-editable; } > requirements.lock

# Outputs and caches of runs; keeps .venv, .data and the Colab-like test venv (make setup's work).
clean:
	rm -rf build .cache/reference .cache/calibration .pytest_cache
