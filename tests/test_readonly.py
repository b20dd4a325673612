"""A log in a directory this process cannot write (specs/log.md L15, tools.md V2): the
inspector reads it, the engine refuses it with ``StorageError``.

The commands run in a child process that cannot override file permissions: as root that is
``setpriv`` dropping CAP_DAC_OVERRIDE from the bounding set (skipped, saying why, where it
cannot), otherwise the plain process.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.eventlog_kit import build, copy, digest

ROOT = Path(__file__).resolve().parent.parent


def _unprivileged() -> list[str]:
    """The command prefix that takes away the power to write a read-only directory."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and util-linux setpriv is missing: cannot drop "
                    "CAP_DAC_OVERRIDE, so no directory is read-only to this process")
    prefix = [setpriv, "--bounding-set", "-dac_override,-dac_read_search"]
    if subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("setpriv cannot drop CAP_DAC_OVERRIDE here (no CAP_SETPCAP?)")
    return prefix


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*_unprivileged(), sys.executable, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> str:
    return build(tmp_path_factory.mktemp("readonly") / "app.db")


@pytest.fixture
def locked_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory made read-only by the test (writable again afterwards, for cleanup)."""
    directory = tmp_path / "ro"
    directory.mkdir()
    yield directory
    directory.chmod(0o755)


_OPEN = """
import sys, trio, eventwf
async def main():
    async with eventwf.open_engine(sys.argv[1]):
        pass
try:
    trio.run(main)
except Exception as exc:
    print(type(exc).__name__, exc)
    sys.exit(3)
"""


def test_l15_a_log_in_a_read_only_directory_is_inspected_and_the_engine_says_storage_error(
        reference: str, locked_dir: Path) -> None:
    path = copy(reference, locked_dir / "app.db")
    locked_dir.chmod(0o555)
    before = digest(path), sorted(os.listdir(locked_dir))
    verified = _run("-m", "tools.eventlog", path, "verify")
    assert verified.returncode == 0 and "INTACT" in verified.stdout, verified
    for command in (["streams"], ["show", "job-1"], ["stats"], ["export"],
                    ["agent", "TestAgent", "alice"], ["workflow", "job-1"]):
        shown = _run("-m", "tools.eventlog", path, *command)
        assert shown.returncode == 0 and shown.stderr == "", (command, shown)
    opened = _run("-c", _OPEN, path)
    assert opened.returncode == 3 and opened.stdout.startswith(f"StorageError {path}"), opened
    assert "Traceback" not in opened.stderr
    assert (digest(path), sorted(os.listdir(locked_dir))) == before  # nothing written


_CRASH = """
import os, sys
from eventwf.model import events as ev
from eventwf.model.codec import encode_event, event_type
from eventwf.store.interface import PendingRow
from eventwf.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
event = ev.WorkflowRunning()
store.commit([PendingRow("wf:x", 0, 1, event_type(event), encode_event(event))])
os.kill(os.getpid(), 9)
"""


def test_l15_commits_in_the_wal_of_a_read_only_directory_are_named_not_skipped(
        locked_dir: Path) -> None:
    path = str(locked_dir / "app.db")
    done = subprocess.run([sys.executable, "-c", _CRASH, path], cwd=ROOT, check=False)
    assert done.returncode == -signal.SIGKILL
    os.remove(path + "-shm")  # as after a copy, or a reboot that cleared it
    locked_dir.chmod(0o555)
    verified = _run("-m", "tools.eventlog", path, "verify")
    assert verified.returncode == 1 and "holds commits" in verified.stdout, verified
    shown = _run("-m", "tools.eventlog", path, "streams")
    assert shown.returncode == 1 and shown.stderr.startswith("eventlog: ") and \
        "make the directory writable" in shown.stderr and "Traceback" not in shown.stderr
