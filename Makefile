# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# torch and torchvision are installed first, pinned (TORCH_PINS), from this machine's
# local wheels or the package index (wherever pip is configured to look), so no
# dependency resolver pulls in another build; then the package under constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lavis_ib_installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-unit demo clean browser screenshots

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=24"
	$(PY) -m pip install $(TORCH_PINS)
	$(PY) -m pip install -c constraints.txt -e ".[test]"
	touch $(STAMP)

# The web demo's test drives the real app in headless Chromium (Debian's packages).
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing chromium and chromium-driver with apt (the web demo's browser test needs them)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
		|| { echo "could not install chromium: run 'apt-get install chromium chromium-driver' as root"; exit 1; }; \
	fi

test: $(STAMP) browser
	$(PY) -m pytest -q tests

# the fast tier: everything but the tests that start processes, train or drive a browser
test-unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration" tests

# the pictures of docs/web_demo.md, taken by the web demo's browser test (`make test`
# saves its screenshots in a temporary folder and writes nothing into the tree)
screenshots: $(STAMP) browser
	LAVIS_IB_SCREENSHOTS=docs/images $(PY) -m pytest -q -p no:cacheprovider tests/web/test_web_browser.py

demo: $(STAMP)
	$(PY) -m lavis_ib.demo

clean:
	rm -rf $(VENV) *.egg-info
