# Thin wrappers over ci/. `make demo` and `make test` set the machine up first.
.PHONY: setup demo test lint bench fuzz
setup:
	bash ci/setup

demo: setup
	.venv/bin/testbed demo

test: setup
	bash ci/test

lint: setup
	.venv/bin/ruff check tunnel testbed tests bench fuzz
	.venv/bin/mypy tunnel testbed

bench: setup
	.venv/bin/python bench/throughput.py
	.venv/bin/python bench/concurrency.py
	.venv/bin/python bench/rtt.py
	.venv/bin/python bench/session_setup.py
	.venv/bin/python bench/transparent_setup.py
	.venv/bin/python bench/memory.py
	.venv/bin/python bench/sftp.py

fuzz: setup
	.venv/bin/python -m fuzz.campaign
