# Thin wrappers over ci/. `make demo` and `make test` set the machine up first.
.PHONY: setup demo test lint bench
setup:
	bash ci/setup

demo: setup
	.venv/bin/testbed demo

test: setup
	bash ci/test

lint: setup
	.venv/bin/ruff check tunnel testbed tests bench
	.venv/bin/mypy tunnel

bench: setup
	.venv/bin/python bench/throughput.py
	.venv/bin/python bench/session_setup.py
	.venv/bin/python bench/memory.py
	.venv/bin/python bench/sftp.py
