# The README's two commands: `make demo` and `make test`. Each creates .venv and installs everything it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	# torchcodec (a 12 MB wheel, no dependencies) loads only with a system FFmpeg; without one its tests skip
	# usearch (2 MB, plus numkong 11 MB) makes the search-index tests run instead of skip
	$(PY) -m pip install --quiet -e ".[test,torchcodec,index]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/coca-video demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_output
