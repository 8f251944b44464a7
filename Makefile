# Two entry points for a fresh machine:
#   make demo   install, then run category decoding on the embedded Haxby sample
#   make test   install, then run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= $(abspath ../shared/data)

.PHONY: install demo test app clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	# torch pinned (requirements-dev.txt); on Linux PyPI's wheel brings the CUDA libraries:
	# install the CPU build first from PyTorch's index for a CPU-only machine (README)
	$(BIN)/pip install -q -c requirements-lock.txt -r requirements-dev.txt
	# every other library at the versions behind the README's numbers (requirements-lock.txt)
	$(BIN)/pip install -q -c requirements-lock.txt -e ".[all,dev]"

demo: install
	$(BIN)/decoder run configs/haxby.yaml --out results/haxby

app: install
	$(BIN)/streamlit run app.py --server.address 127.0.0.1

test: install
	DECODER_SHARED_DATA=$${DECODER_SHARED_DATA:-$(SHARED)} $(BIN)/python -m pytest -q -ra tests

clean:
	rm -rf $(VENV) results .pytest_cache
