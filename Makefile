# Two commands on a fresh clone:  `make demo` (the main job)  and  `make test` (the test suite).
# Both create .venv and install what they need. TORCH picks the torch build: the default is the CPU wheel;
# on a GPU machine use e.g. `make demo TORCH="torch==2.13.0 --index-url <your CUDA wheel index>"`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

TEST_STAMP := $(VENV)/.installed-test

$(STAMP): $(BIN)/python pyproject.toml requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q $(TORCH)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt -e ".[onnx,openvino]"
	touch $(STAMP)

# What only the tests need: pytest, hypothesis, Ray (the --engine ray tests start a local cluster; about 500 MB),
# the serve extra (FastAPI, uvicorn, httpx; the page's test uses Debian's chromium when installed),
# and NVIDIA's own code, the parity reference. --no-deps for the latter: it asks for torchvision, which it never
# uses here and which would replace our torch. The seed's torchvision 0.10 is only downloaded, never installed:
# tests/test_to_tensor.py reads three pure-Python files from its wheel (the test skips, saying so, if it is absent).
$(TEST_STAMP): $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -q -e ".[onnx,openvino,test,ray,serve]"
	$(BIN)/pip install --disable-pip-version-check -q --no-deps pix2pixhd==1.0
	$(BIN)/pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --python-version 3.8 \
	    --platform manylinux1_x86_64 -d $(VENV)/reference torchvision==0.10.0 \
	    || echo "torchvision 0.10.0's wheel could not be downloaded: tests/test_to_tensor.py will skip"
	touch $(TEST_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/pix2pixhd-deploy demo --output demo_out

test: $(TEST_STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf demo_out .pytest_cache
