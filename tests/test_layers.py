"""The layer order of specs/design.md, enforced by reading every module's imports (D1-D6)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import eventwf

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "eventwf"

LAYERS = {
    "eventwf.errors": 0,
    "eventwf._validation": 1,
    "eventwf._faults": 1,
    "eventwf._types": 1,
    "eventwf._readonly": 1,
    "eventwf._events": 2,
    "eventwf._codec": 2,
    "eventwf._exceptions": 3,
    "eventwf._commands": 4,
    "eventwf._fold": 4,
    "eventwf._agentfold": 4,
    "eventwf._replay": 5,
    "eventwf._store": 6,
    "eventwf._store.pg_sql": 6,
    "eventwf._clock": 7,
    "eventwf._writer": 7,
    "eventwf._step": 8,
    "eventwf._stephost": 8,
    "eventwf._runner": 8,
    "eventwf._agents": 9,
    "eventwf._core": 9,
    "eventwf._timers": 9,
    "eventwf._recovery": 10,
    "eventwf._check": 9,
    "eventwf._ops": 10,
    "eventwf.agent": 10,
    "eventwf.workflow": 10,
    "eventwf.engine": 11,
    "eventwf.server": 12,
    "eventwf.client": 12,
    "eventwf._outbox": 12,
    "eventwf._handshake": 12,
    "eventwf._inbound": 12,
    "eventwf._demo": 13,
    "eventwf._example": 13,
    "eventwf.__main__": 13,
    "eventwf": 14,
}
FORBIDDEN = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
PG_SQL = "eventwf._store.pg_sql"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer_of(module: str) -> int | None:
    """The layer of an eventwf module (a subpackage's modules share its layer)."""
    while module:
        if module in LAYERS:
            return LAYERS[module]
        module = module.rpartition(".")[0]
    return None


def _imports(path: Path) -> list[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    out: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            out.append(prefix)
            out.extend(f"{prefix}.{alias.name}" for alias in node.names)
    return out


def _package_modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    missing = [_module_name(p) for p in _package_modules() if _layer_of(_module_name(p)) is None]
    assert missing == [], f"add these modules to specs/design.md and LAYERS: {missing}"


def test_imports_never_go_up_a_layer() -> None:
    violations = []
    for path in _package_modules():
        me = _module_name(path)
        mine = _layer_of(me)
        assert mine is not None
        for name in _imports(path):
            if not name.startswith("eventwf"):
                continue
            theirs = _layer_of(name)
            if theirs is not None and theirs > mine and not me.startswith(name + "."):
                violations.append(f"{me} (layer {mine}) imports {name} (layer {theirs})")
    assert violations == []


def _top_level(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imports(path)}


def test_sans_io_core_and_io_boundaries() -> None:
    for path in _package_modules():
        me, tops = _module_name(path), _top_level(path)
        layer = _layer_of(me)
        assert layer is not None
        if me in ("eventwf._commands", "eventwf._fold", "eventwf._agentfold",
                  "eventwf._replay"):  # D1
            assert not tops & {"trio", "sqlite3", "sqlite_utils"}, me
        if not me.startswith("eventwf._store"):  # D2
            assert not tops & {"sqlite3", "sqlite_utils"}, f"{me} touches SQLite"
        if me != PG_SQL:  # D2a
            assert "psycopg" not in tops, f"{me} touches PostgreSQL"
        if layer < 7:  # D3
            assert "trio" not in tops, f"{me} (layer {layer}) imports trio"
        if layer != 12:
            assert "trio_websocket" not in tops, f"{me} imports trio_websocket"
        assert not tops & FORBIDDEN, f"{me} imports {tops & FORBIDDEN}"  # D4


def test_the_postgresql_statements_use_only_psycopg_and_the_standard_library() -> None:
    """D2a: pg_sql stands alone (the PostgreSQL store is written against it later)."""
    path = PACKAGE / "_store" / "pg_sql.py"
    tops = _top_level(path) - {"__future__"}
    assert "psycopg" in tops
    assert tops - {"psycopg"} <= set(sys.stdlib_module_names), tops


def test_tools_use_only_the_public_and_storage_layers() -> None:  # D5
    for path in sorted((ROOT / "tools").rglob("*.py")):
        for name in _imports(path):
            if name.startswith("eventwf."):
                layer = _layer_of(name)
                public = name.split(".")[1] in eventwf.__all__
                assert public or (layer is not None and layer <= 6), (
                    f"{path.name} imports {name} (layer {layer})")
        assert not _top_level(path) & FORBIDDEN


def test_init_only_reexports_its_all() -> None:  # D6
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    exported = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                assert alias.asname == alias.name, f"re-export {alias.name} as itself"
                exported.add(alias.name)
        elif isinstance(node, ast.Assign):
            assert {t.id for t in node.targets if isinstance(t, ast.Name)} <= {
                "__all__", "__version__"}
        else:
            assert isinstance(node, ast.Expr), ast.dump(node)  # the docstring
    assert exported == set(eventwf.__all__)
    assert sorted(eventwf.__all__) == eventwf.__all__
