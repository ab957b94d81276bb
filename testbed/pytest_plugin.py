"""pytest plugin: `pytest scenarios/` collects every scenario file as one test item.

Safe under pytest-xdist: namespace names carry the worker's pid, every address lives inside
the scenario's own namespaces, and users are per scenario. Without root it skips, saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from testbed import backends
from testbed.runner import ScenarioRun, table
from testbed.scenario import ScenarioError, load

OUT = Path(__file__).resolve().parents[1] / "out" / "scenarios"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--testbed-backend", default="", choices=("", *backends.KINDS),
                     help="run every scenario there: netns (root), local (loopback, no root, "
                     "no per-link capture) or docker; default: the backends each scenario "
                     "names (`[scenario] backends`, netns if none)")


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.suffix == ".toml" and file_path.parent.name == "scenarios":
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self) -> Any:
        """One item per backend the scenario names (`[scenario] backends`, default netns),
        `name[docker]` beyond the first; `--testbed-backend` runs each once, there."""
        chosen = self.config.getoption("--testbed-backend")
        if chosen:
            yield ScenarioItem.from_parent(self, name=self.path.stem, backend=chosen)
            return
        try:
            runs_on = load(self.path).backends
        except ScenarioError:
            runs_on = ("netns",)  # the item reports the error when it runs
        for n, backend in enumerate(runs_on):
            name = self.path.stem if n == 0 else f"{self.path.stem}[{backend}]"
            yield ScenarioItem.from_parent(self, name=name, backend=backend)


class ScenarioItem(pytest.Item):
    def __init__(self, *, backend: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backend = backend

    def runtest(self) -> None:
        backend = self.backend
        reason = backends.unavailable(backend)
        if reason:
            hint = " (--testbed-backend local runs without root)" if backend == "netns" else ""
            pytest.skip(reason + hint)
        try:
            scenario = load(self.path)
        except ScenarioError as exc:
            raise ScenarioFailed(str(exc)) from None
        result = ScenarioRun(scenario, OUT, backend=backend).run()
        self.add_report_section("call", "verdicts", table(result))
        if not result.passed:
            raise ScenarioFailed(table(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str:
        if isinstance(excinfo.value, ScenarioFailed):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"scenario {self.name}"


class ScenarioFailed(Exception):
    """A scenario whose checks did not come out as expected (the table says which)."""
