# Thin wrappers over ci/. `make demo` and `make test` set the machine up first.
.PHONY: setup demo test lint bench fuzz report-shots
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
	.venv/bin/python bench/wan.py
	.venv/bin/python bench/session_setup.py
	.venv/bin/python bench/transparent_setup.py
	.venv/bin/python bench/last_hop_tls.py
	.venv/bin/python bench/memory.py
	.venv/bin/python bench/sftp.py
	.venv/bin/python bench/summary.py

fuzz: setup
	.venv/bin/python -m fuzz.campaign

# The README's pictures of the scenario report, drawn by headless Chromium.
report-shots: setup
	.venv/bin/testbed run --report out/report-third-host scenarios/ftp-tunnel-third-host.toml
	.venv/bin/testbed run --report out/report-bypass scenarios/ssh-D-active-bypass.toml
	.venv/bin/python -c "from pathlib import Path; from testbed.report import screenshot; \
	screenshot(Path('out/report-third-host/report.html'), Path('docs/report-ftp-tunnel-third-host.png'), 1100, 1250); \
	screenshot(Path('out/report-bypass/report.html'), Path('docs/report-ssh-D-active-bypass.png'), 1100, 900)"
