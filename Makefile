# The README's two commands: `make demo` and `make test`. Each creates .venv and installs everything it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	# torchcodec (a 12 MB wheel, no dependencies) loads only with a system FFmpeg (make system-packages); else its tests skip
	# usearch (2 MB, plus numkong 11 MB) makes the search-index tests run instead of skip; captioning: pycocoevalcap
	# (the coco-caption metrics the parity tests compare with); ray (~240 MB): score --engine ray and its tests;
	# linear (scikit-learn, ~13 MB): the probe's mode=linear baseline; s3-test: s3fs for s3:// inputs and outputs,
	# and moto's S3 server the object-storage tests run against; serve: FastAPI + uvicorn for coca-video serve (its tests
	# drive chromium through selenium, in the test extra)
	$(PY) -m pip install --quiet -e ".[test,torchcodec,index,captioning,ray,linear,s3-test,serve]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/coca-video demo

# Debian packages the optional tests need (scripts/system_packages.sh: ffmpeg for torchcodec, chromium and chromium-driver
# for the report and serve page tests, default-jre-headless where Java is missing): installed when root with apt-get,
# else one line says which tests will skip. SYSTEM_PACKAGES=0 leaves the machine as it is.
system-packages:
	@bash scripts/system_packages.sh

test: $(STAMP) system-packages
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo_output
