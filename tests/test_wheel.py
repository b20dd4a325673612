"""The wheel, installed outside the repository, gives a working ``eventwf`` command
(specs/tools.md V0, V0a).

The wheel is built offline from a copy of the sources (``pip wheel --no-deps
--no-build-isolation``) and installed into a fresh virtual environment in a temporary
directory. That environment sees the dependencies (trio, msgspec, ...) through a ``.pth``
line naming this interpreter's site-packages; a plain path line runs none of the ``.pth``
files there, so this checkout's editable install stays out and ``eventwf`` is the wheel's.
Every command then runs with the temporary directory as its working directory, with no
``PYTHONPATH``: nothing of the clone (``tools/``, ``tests/``) can be imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _wheel_buildable() -> str | None:
    """Why the wheel cannot be built here without a network, or None."""
    try:
        import setuptools
    except ImportError:
        return "setuptools is not installed (pip install -e '.[dev]')"
    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1):
        try:
            import wheel  # noqa: F401  (setuptools before 70.1 builds wheels with it)
        except ImportError:
            return (f"setuptools {setuptools.__version__} cannot build a wheel offline without "
                    "the `wheel` package; pip install -e '.[dev]' brings setuptools>=70.1")
    return None


pytestmark = pytest.mark.skipif(_wheel_buildable() is not None,
                                reason=str(_wheel_buildable()))

FLOWS = '''
import eventwf


class Shop(eventwf.Agent):
    initial_state = {}


class Ship(eventwf.AgentWorkflow[Shop]):
    async def run(self, event, step):
        label = await step.do("label", lambda: "LABEL-" + str(event.payload["id"]))
        if event.payload.get("wait"):
            await step.wait_for_event("pickup", type="pickup", timeout="1 day")
        return label


def options():
    return {"agents": [Shop], "workflows": [Ship]}
'''

CHANGED = FLOWS.replace('step.do("label"', 'step.do("print label"')

MAKE_LOG = '''
import sys, trio, eventwf
from flows import Shop, Ship

async def main():
    async with eventwf.open_engine(sys.argv[1], agents=[Shop], workflows=[Ship]) as engine:
        shop = await engine.get_agent(Shop, "shop-1")
        await engine.wait_workflow(await shop.run_workflow("Ship", {"id": 1}, id="done"))
        waiting = await shop.run_workflow("Ship", {"id": 2, "wait": True}, id="waiting")
        while (await shop.get_workflow(waiting)).status != "waiting":
            await trio.sleep(0.01)

trio.run(main)
print(eventwf.__file__)
'''


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=120)


def _build_wheel(tmp: Path) -> Path:
    """The wheel, built from a copy of the sources (the checkout gets no build/ files)."""
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "eventwf", source / "eventwf",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(tmp / "dist"), str(source)],
        capture_output=True, text=True, check=False, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (tmp / "dist").glob("eventwf-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A new virtual environment holding the wheel, its dependencies seen through a .pth."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "eventwf_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", "-q", str(wheel)], capture_output=True, text=True, check=False,
        timeout=120)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return venv


def test_v0a_the_installed_wheel_runs_eventwf_log_outside_the_repository(
        tmp_path: Path) -> None:
    venv = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    (work / "flows.py").write_text(FLOWS)
    (work / "flows_changed.py").write_text(CHANGED)
    (work / "make_log.py").write_text(MAKE_LOG)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    eventwf, python = str(venv / "bin" / "eventwf"), str(venv / "bin" / "python")

    made = _run([python, "make_log.py", "app.db"], work, env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith(str(venv)), made.stdout  # the wheel, not the clone

    stats = _run([eventwf, "log", "app.db", "stats"], work, env)
    assert stats.returncode == 0 and "workflow.completed" in stats.stdout, stats
    verify = _run([eventwf, "log", "app.db", "verify"], work, env)
    assert verify.returncode == 0 and "INTACT" in verify.stdout, verify
    backup = _run([eventwf, "log", "app.db", "backup", "copy.db"], work, env)
    assert backup.returncode == 0 and backup.stdout.startswith("backed up app.db to copy.db"), (
        backup)
    copied = _run([python, "-m", "eventwf", "log", "copy.db", "verify"], work, env)
    assert copied.returncode == 0 and "INTACT" in copied.stdout, copied
    again = _run([eventwf, "log", "app.db", "backup", "copy.db"], work, env)
    assert again.returncode == 2 and "already exists" in again.stderr, again

    check = _run([eventwf, "log", "app.db", "check", "flows:options"], work, env)
    assert check.returncode == 0, check
    assert "waiting" in check.stdout and "1 unfinished workflow(s): 1 ok" in check.stdout
    diverged = _run([eventwf, "log", "app.db", "check", "flows_changed:options"], work, env)
    assert diverged.returncode == 1 and "diverged" in diverged.stdout, diverged
    usage = _run([eventwf, "log", "app.db"], work, env)
    assert usage.returncode == 2 and usage.stderr.startswith("usage: eventwf log"), usage
