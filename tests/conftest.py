"""Suite-wide pytest options. On CI, `--fail-on-skip` turns any skipped test into a failure:
CI has root and every binary, so a skip there means lost coverage, not a missing tool."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fail-on-skip", action="store_true",
                     help="fail the run if any test was skipped (CI)")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not session.config.getoption("--fail-on-skip"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped:
        reporter.write_line(f"--fail-on-skip: {len(skipped)} test(s) skipped; on CI none may",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
