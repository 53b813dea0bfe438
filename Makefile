# One place for commands; the scripts do the real work so they also run without make.
# `make test ARGS="-k backups -x"` passes arguments to pytest (or to `sourcekeeper serve` for run).
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test lint migrate

run:
	scripts/run $(ARGS)

test:
	scripts/test $(ARGS)

lint:
	uv run --frozen ruff check src tests

migrate:
	uv run --frozen sourcekeeper migrate
