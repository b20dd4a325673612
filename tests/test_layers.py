"""The layers of specs/design.md, enforced by reading every module's imports (D1-D7).

Packages are layered (errors < model < store < runtime < agent/workflow < engine <
server/client < apps); inside a package, its modules are ranked too, and a module imports
only modules of lower layers or of a lower rank in its own package. Nothing reaches into
another module's private names.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import eventwf

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "eventwf"

# The layer of each package or public module (specs/design.md "Layers").
LAYERS = {
    "eventwf.errors": 0,
    "eventwf.faults": 0,
    "eventwf.model": 1,
    "eventwf.store": 2,
    "eventwf.runtime": 3,
    "eventwf.agent": 4,
    "eventwf.workflow": 5,
    "eventwf.engine": 6,
    "eventwf.server": 7,
    "eventwf.client": 7,
    "eventwf.apps": 8,
    "eventwf.logtool": 8,
    "eventwf.testing": 8,
    "eventwf.__main__": 8,
    "eventwf": 9,
}
# Inside a package, the rank of each module: a module imports only lower ranks.
RANKS = {
    "eventwf.model": {
        "values": 0, "readonly": 0, "status": 0, "events": 0, "merge_patch": 0,
        "types": 1, "json_data": 1, "codec": 2, "commands": 1, "agent_fold": 1, "decisions": 1,
        "replay": 2, "failures": 3, "workflow_fold": 2, "inbox_codec": 0, "mailbox": 0,
    },
    "eventwf.store": {"interface": 0, "rows": 0, "location": 0, "listing_sql": 1, "sqlite": 1,
                      "postgres": 1},
    "eventwf.store.postgres": {"sql": 0, "lock": 1, "schema": 1, "log": 1, "projections": 1,
                               "shard_sql": 1, "shards": 2,
                               "rebuild": 2, "store": 3, "reader": 4, "inbox": 3,
                               "notify": 2, "follow": 3},
    "eventwf.store.sqlite": {
        "transaction": 0, "anchor": 0, "columns": 0, "lock": 0,
        "schema": 1, "log": 1, "projections": 1,
        "chaincheck": 2, "opening": 2, "backup": 2, "rebuild": 3, "store": 4, "prefix": 5,
    },
    "eventwf.runtime": {
        "ack": 0, "clock": 0, "summaries": 0, "agent_host": 0, "tasks": 0, "telemetry": 0,
        "fingerprint": 0, "signals": 0, "ownership": 0, "scratch": 0, "skew": 0,
        "fencing": 1, "consuming": 1, "staging": 2, "writer": 3, "timers": 1, "stephost": 1,
        "agents": 1,
        "command": 1, "otel": 1,
        "steps": 2, "hibernation": 2, "follower": 4, "remote_waits": 2,
        "notifications": 1, "attempts": 1, "runner": 3, "check": 4, "runs": 4,
        "router": 5, "inbox": 5, "runtime": 6, "recovery": 7, "tracking": 7, "operations": 8,
        "takeover": 8,
    },
    "eventwf.server": {"outbox": 0, "front": 0, "handshake": 1, "inbound": 2, "connection": 2,
                       "websocket": 3},
    "eventwf.apps": {"example": 0, "demo": 0, "console": 0, "serving": 1},
    "eventwf.logtool": {
        "lookups": 0, "rowview": 0, "source": 1, "verify_report": 0, "pgsource": 2,
        "render": 2,
        "listing": 3, "timeline": 3, "agentstate": 3, "stats": 3, "check": 3, "verify": 3,
        "backup": 3, "workflows": 3, "pgverify": 4,
        "timeline_view": 4, "verify_view": 4, "export": 4,
        "cli": 5,
    },
    "eventwf.testing": {"ledger": 0, "harness": 0, "session": 1, "determinism": 1, "crashes": 2,
                        "plugin": 3},
    "eventwf.apps.demo": {"board": 0, "boards": 0, "site": 1, "run": 2},
    "eventwf.apps.console": {"tail": 0, "views": 1, "html": 1, "site": 2, "controls": 3, "run": 3,
                             "mount": 4},
}
FORBIDDEN = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle"}
DATABASE_DRIVERS = {"sqlite3", "sqlite_utils", "psycopg"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer_of(module: str) -> int | None:
    """The layer of an eventwf module (a package's modules share its layer)."""
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


def _rank(module: str) -> tuple[str, int] | None:
    """(package, rank) of a module inside a ranked package (its nearest one)."""
    package, _, leaf = module.rpartition(".")
    while package:
        ranks = RANKS.get(package)
        if ranks is not None and leaf in ranks:
            return package, ranks[leaf]
        package, _, parent_leaf = package.rpartition(".")
        leaf = parent_leaf
    return None


def test_every_module_has_a_layer_and_a_rank_in_its_package() -> None:
    missing = [_module_name(p) for p in _package_modules() if _layer_of(_module_name(p)) is None]
    assert missing == [], f"add these modules to specs/design.md and LAYERS: {missing}"
    unranked = []
    for path in _package_modules():
        name = _module_name(path)
        package = name.rpartition(".")[0] if path.name != "__init__.py" else None
        if package in RANKS and _rank(name) is None:
            unranked.append(name)
    assert unranked == [], f"rank these modules in RANKS (and specs/design.md): {unranked}"


def test_imports_never_go_up_a_layer_or_a_rank() -> None:
    violations = []
    for path in _package_modules():
        me = _module_name(path)
        mine = _layer_of(me)
        assert mine is not None
        my_rank = _rank(me)
        for name in _imports(path):
            if not name.startswith("eventwf") or me.startswith(name + ".") or name == me:
                continue  # a package's own __init__ and names inside it
            theirs = _layer_of(name)
            if theirs is not None and theirs > mine:
                violations.append(f"{me} (layer {mine}) imports {name} (layer {theirs})")
            their_rank = _rank(name)
            if (my_rank and their_rank and my_rank[0] == their_rank[0]
                    and their_rank[1] >= my_rank[1] and not name.startswith(me + ".")):
                violations.append(f"{me} (rank {my_rank[1]} in {my_rank[0]}) imports "
                                  f"{name} (rank {their_rank[1]})")
    assert violations == []


def _top_level(path: Path) -> set[str]:
    return {name.split(".")[0] for name in _imports(path)}


def test_sans_io_model_and_io_boundaries() -> None:
    for path in _package_modules():
        me, tops = _module_name(path), _top_level(path)
        layer = _layer_of(me)
        assert layer is not None
        if me.startswith("eventwf.model"):  # D1: values in, values out
            assert tops <= {"__future__", "eventwf", "msgspec", "collections", "dataclasses",
                            "datetime", "functools", "math", "re", "secrets", "typing",
                            "traceback", "importlib", "uuid", "contextvars", "builtins",
                            "threading", "types", "sys"}, (me, tops)
        if me.startswith("eventwf.logtool"):  # D2b: it reads the file, read-only
            assert not tops & (DATABASE_DRIVERS - {"sqlite3"}), f"{me} touches a database"
        elif not me.startswith("eventwf.store"):  # D2
            assert not tops & DATABASE_DRIVERS, f"{me} touches a database"
        if not me.startswith("eventwf.store.postgres"):  # D2a
            assert "psycopg" not in tops, f"{me} touches PostgreSQL"
        if layer < LAYERS["eventwf.runtime"]:  # D3
            assert "trio" not in tops, f"{me} (layer {layer}) imports trio"
        if not me.startswith(("eventwf.server", "eventwf.client")):
            assert "trio_websocket" not in tops, f"{me} imports trio_websocket"
        assert not tops & FORBIDDEN, f"{me} imports {tops & FORBIDDEN}"  # D4


def _runtime_imports(path: Path) -> set[str]:
    """Top-level modules ``path`` imports when it runs (not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for inner in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_otel_module_imports_opentelemetry() -> None:
    """D8: OpenTelemetry is optional; one module imports it, and only when it is on."""
    importers = [_module_name(p) for p in _package_modules()
                 if "opentelemetry" in _runtime_imports(p)]
    assert importers == ["eventwf.runtime.otel"]


def test_the_postgresql_statements_use_only_psycopg_and_the_standard_library() -> None:
    """D2a: the PostgreSQL statements stand alone (the store is written against them);
    the shard statements (``shard_sql.py``) add only the log's statements (``sql.py``)."""
    path = PACKAGE / "store" / "postgres" / "sql.py"
    tops = _top_level(path) - {"__future__"}
    assert "psycopg" in tops
    assert tops - {"psycopg"} <= set(sys.stdlib_module_names), tops
    path = PACKAGE / "store" / "postgres" / "shard_sql.py"
    statements = "eventwf.store.postgres.sql"
    ours = {name for name in _imports(path) if name.startswith("eventwf")}
    assert all(name == statements or name.startswith(statements + ".") for name in ours), ours
    tops = _top_level(path) - {"__future__", "eventwf"}
    assert tops - {"psycopg"} <= set(sys.stdlib_module_names), tops


def test_tools_use_only_the_public_model_and_storage_layers() -> None:  # D5
    for path in sorted((ROOT / "tools").rglob("*.py")):
        for name in _imports(path):
            if name.startswith("eventwf."):
                layer = _layer_of(name)
                public = name.split(".")[1] in eventwf.__all__ or name.startswith(
                    "eventwf.logtool")  # the shim of python -m tools.eventlog
                assert public or (layer is not None and layer <= LAYERS["eventwf.store"]), (
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


def _defined_names(tree: ast.Module) -> set[str]:
    """Every name a module defines: functions, classes, their attributes and fields."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.alias):
            names.add(node.asname or node.name.rpartition(".")[2])
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


# Public APIs of the standard library that are spelled with an underscore.
_STDLIB_UNDERSCORED = {"_make", "_replace", "_asdict", "_fields", "_exit"}


def test_no_module_reaches_into_another_modules_private_names() -> None:  # D7
    """``x._name`` only for names the module itself defines. The one exception: the
    ``_eventwf_`` attach points the public base classes (Agent, AgentWorkflow) define for
    the runtime, named so that no user attribute can clash with them."""
    violations = []
    for path in _package_modules():
        tree = ast.parse(path.read_text(), filename=str(path))
        own = _defined_names(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__") or attr in own:
                continue
            if attr.startswith("_eventwf_") or attr in _STDLIB_UNDERSCORED:
                continue
            violations.append(f"{_module_name(path)}:{node.lineno} reaches ._{attr[1:]}")
    assert violations == []
