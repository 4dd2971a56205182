"""The CI entry point and the test suite's handling of missing tools."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import require_tool

ROOT = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"Install and run the tests.*?```sh\n(.*?)\n```", readme, re.S)
    assert m is not None
    lines = [x for x in (ROOT / ".ci" / "run").read_text().splitlines()
             if x.strip() and not x.startswith("#")]
    assert m.group(1) in lines  # the one command that runs the suite
    assert m.group(1).endswith("python3 -m pytest -q -rs")  # skips are shown, with why


def test_missing_tool_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no-such-tool-h1 not installed"):
        require_tool("no-such-tool-h1")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and a required tool is missing"):
        require_tool("no-such-tool-h1")
    assert require_tool("sh", "/bin/sh") == "/bin/sh"  # what the caller found
    assert Path(require_tool("sh")).name == "sh"
