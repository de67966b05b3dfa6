# The README's two commands. `make demo` creates .venv with what the demo needs (torch, torchvision and the package's
# own dependencies) and runs it; `make test` adds the test stack and the optional extras, then runs the tests.
# A CPU-only torch: install it into .venv before `make demo` (README, "Install"); pip then keeps it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed

.PHONY: demo test clean system-packages

$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e .
	touch $(DEMO_STAMP)

# The test extras: pytest, open_clip and transformers (parity tests), scikit-video, httpx, selenium, tensorboard
# (test); torchcodec (a 12 MB wheel; loads only with a system FFmpeg: make system-packages, else its tests skip); usearch
# (index); pycocoevalcap (captioning: the coco-caption metrics the parity tests compare with); ray (~240 MB: score
# --engine ray and its tests); scikit-learn (linear: the probe's mode=linear); s3fs and moto's S3 server (s3-test);
# FastAPI + uvicorn (serve); PySceneDetect with headless OpenCV, no libGL needed (scenes).
$(STAMP): $(DEMO_STAMP)
	$(PY) -m pip install --quiet -e ".[test,torchcodec,index,captioning,ray,linear,s3-test,serve,scenes]"
	touch $(STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/coca-video demo

# Debian packages the optional tests need (scripts/system_packages.sh: ffmpeg for torchcodec, chromium and chromium-driver
# for the report and serve page tests, default-jre-headless where Java is missing): installed when root with apt-get,
# else one line says which tests will skip. SYSTEM_PACKAGES=0 leaves the machine as it is.
system-packages:
	@bash scripts/system_packages.sh

# pytest-xdist workers: one more than the cores, up to 4 (a third worker on 2 cores fills the time the others wait
# on subprocesses, browsers and Ray actors), each taking whole test modules: their module fixtures (a Ray cluster, an
# S3 server, a trained model) are made once.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(min(4, len(os.sched_getaffinity(0)) + 1))")
test: $(STAMP) system-packages
	$(PY) -m pytest -q --numprocesses=$(TEST_WORKERS) --dist=loadfile

clean:
	rm -rf $(VENV) demo_output
