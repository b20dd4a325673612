"""The documentation's sources (docs/, mkdocs.yml), the LICENSE and the docs build step.

Requirements DOC1-DOC7 (specs/docs.md).

Everything is read as text, so these tests need none of the docs tools; the site itself is
built with warnings as errors by .ci/run (`mkdocs build --strict`). The API reference is
generated from `::: eventwf.NAME` lines in docs/reference/, so a public name without one
is a public name without documentation.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import eventwf

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
DIRECTIVE = re.compile(r"^::: *(\S+) *$", re.M)
TITLED_BLOCK = re.compile(r'^```python title="([\w.]+)"\n(.*?)^```$', re.M | re.S)
# a name of the package's namespace, backticked or in a link: `eventwf.Agent.set_state`
MENTION = re.compile(r"\beventwf\.(_?[A-Za-z]\w*)")


def reference_targets() -> list[str]:
    """What every `::: target` line of the reference pages documents, in page order."""
    return [target for page in sorted(REFERENCE.glob("*.md"))
            for target in DIRECTIVE.findall(page.read_text())]


def undocumented(public: list[str], targets: list[str]) -> list[str]:
    """The public names that no reference page documents under their public path."""
    documented = set(targets)
    return [name for name in public if f"eventwf.{name}" not in documented]


def not_public(public: list[str], targets: list[str]) -> list[str]:
    """Targets that are not `eventwf.<public name>` (internal paths break on a move)."""
    return [t for t in targets if t.removeprefix("eventwf.") not in public
            or not t.startswith("eventwf.")]


def test_every_public_name_is_in_the_api_reference() -> None:  # DOC4
    assert undocumented(list(eventwf.__all__), reference_targets()) == []


def test_the_reference_documents_each_name_once_by_its_public_path() -> None:  # DOC4
    targets = reference_targets()
    assert not_public(list(eventwf.__all__), targets) == []
    assert sorted(t for t in set(targets) if targets.count(t) > 1) == []


def test_the_check_names_what_the_reference_lacks() -> None:
    """The two checks above can fail: a new public name, or a page that lost a name."""
    targets = reference_targets()
    assert undocumented([*eventwf.__all__, "new_public_name"], targets) == ["new_public_name"]
    assert undocumented(list(eventwf.__all__), targets[1:]) == [targets[0].split(".", 1)[1]]
    assert not_public(list(eventwf.__all__), [*targets, "eventwf._core.Core"]) == [
        "eventwf._core.Core"]


# Public modules of the package besides its names: the testing kit (specs/testing.md).
PUBLIC_MODULES = {"testing"}
# The OpenTelemetry attribute and instrument names the observability guide lists
# (eventwf.workflow.id, eventwf.steps.completed...): names of data, not of objects.
TELEMETRY_NAMES = {"workflow", "agent", "step", "steps", "step_attempts", "commits", "events",
                   "hibernations", "commit", "writer", "workflows", "timers", "agents",
                   "websocket", "outcome", "execution", "replayed_commands", "log", "link"}


def test_the_pages_name_only_public_objects() -> None:  # DOC4
    """Prose and examples refer to `eventwf.X` only for a public X or a public module
    (specs/ may say more)."""
    public = set(eventwf.__all__) | PUBLIC_MODULES
    wrong = [(page.relative_to(DOCS).as_posix(), name)
             for page in sorted(DOCS.rglob("*.md")) if "specs" not in page.parts
             for name in MENTION.findall(page.read_text()) if name not in public
             and not (page.name == "observability.md" and name in TELEMETRY_NAMES)]
    assert wrong == []


def _nav_pages() -> list[str]:
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:"):]
    return re.findall(r"^\s+- (?:[^:\n]+: )?([\w/.-]+\.md)$", nav, re.M)


def test_every_page_is_in_the_navigation_and_every_entry_exists() -> None:  # DOC6
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    nav = _nav_pages()
    assert sorted(nav) == pages
    assert len(set(nav)) == len(nav)


def test_every_spec_is_published_as_it_is() -> None:  # DOC6 (specs/_*.md are working notes)
    for spec in sorted((ROOT / "specs").glob("[!_]*.md")):
        page = DOCS / "specs" / spec.name
        assert page.exists(), f"specs/{spec.name} has no page docs/specs/{spec.name}"
        assert page.read_text() == f'--8<-- "specs/{spec.name}"\n'


def _programs() -> list[tuple[str, dict[str, str]]]:
    """Per page, its complete programs: python blocks with a file title."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        blocks = dict(TITLED_BLOCK.findall(page.read_text()))
        if blocks:
            found.append((page.relative_to(DOCS).as_posix(), blocks))
    return found


@pytest.mark.parametrize(("page", "files"), _programs(), ids=[p for p, _ in _programs()])
def test_the_complete_programs_of_a_page_run(page: str, files: dict[str, str],
                                             tmp_path: Path) -> None:  # DOC5
    """Each titled block is written to its file: test_*.py runs under pytest (beside the
    page's conftest.py), every other module with a `trio.run(` runs as a script."""
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    ran = 0
    for name, code in files.items():
        if name.startswith("test_"):
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", name]
        elif "trio.run(" in code:
            command = [sys.executable, name]
        else:
            continue
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0, f"{page}: {name}\n{out.stdout}\n{out.stderr}"
        ran += 1
    assert ran, f"{page} has titled blocks but none runs"


def test_the_getting_started_page_has_programs() -> None:
    pages = [page for page, _ in _programs()]
    assert "getting-started.md" in pages and "guides/testing.md" in pages


def test_the_license_is_the_mit_license_that_pyproject_names() -> None:  # DOC1
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "MIT"}
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n\nCopyright (c) 2026 the eventwf authors\n")
    assert "Permission is hereby granted, free of charge" in text
    assert 'THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND' in text


def test_the_docs_tools_are_an_extra_and_ci_builds_the_site_strictly() -> None:  # DOC2
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    docs = project["optional-dependencies"]["docs"]
    assert any(d.startswith("mkdocstrings[python]") for d in docs)
    assert not any(d.split("[")[0].split(">")[0] in {"mkdocs", "mkdocstrings"}
                   for d in project["dependencies"])
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -q -e '.[docs]'" in ci
    build = re.search(r"^[^#\n]*bin/mkdocs build --strict.*$", ci, re.M)
    assert build is not None
    assert not re.search(r" (--quiet|-q)\b", build.group(0).split("#")[0])  # it hides warnings
    assert "/site/" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_readme_links_to_the_docs() -> None:  # DOC7
    assert "(docs/index.md)" in (ROOT / "README.md").read_text()
