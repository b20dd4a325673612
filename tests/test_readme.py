"""The README's example runs as it is, and the README keeps its two newcomer commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_agent_and_workflow_example_runs(tmp_path: Path) -> None:
    section = README[README.index("## An agent and a workflow"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    script = tmp_path / "example.py"
    script.write_text(code.group(1).replace('"app.db"', repr(str(tmp_path / "app.db"))))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "done: {'words': 3, 'approved_by': {'by': 'alice'}}" in out.stdout
    assert re.search(r"\{'tasks': \{'wf_[A-Za-z0-9_-]{21}': 3\}\}", out.stdout)


def test_the_fan_out_example_runs(tmp_path: Path) -> None:
    section = README[README.index("## Steps in parallel"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    script = tmp_path / "fanout.py"
    script.write_text(code.group(1).replace('"crawl.db"', repr(str(tmp_path / "crawl.db"))))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    expected = sum(len(f"<html>https://example.com/{i}</html>") for i in range(10))
    assert out.stdout.strip() == f"complete {expected}"


def test_the_testing_example_passes_under_the_plugin(tmp_path: Path) -> None:
    section = README[README.index("## Testing your workflows"):]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    (tmp_path / "test_shop.py").write_text(code.group(1))
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "test_shop.py"], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 passed" in out.stdout


def test_the_quick_start_has_the_demo_and_the_test_command() -> None:
    quick = README[README.index("## Quick start"):README.index("## What you will see")]
    commands = re.findall(r"```sh\n(.*?)\n```", quick, re.S)
    assert commands[0].endswith("python -m eventwf demo")
    assert commands[1].endswith("python -m pytest")
    assert all(c.startswith("python3 -m venv .venv && .venv/bin/pip install") for c in commands)
