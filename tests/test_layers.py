"""The floors: the engine is pure (no store, no DuckDB), each floor imports only those below.

    front ends (lampbox.cli, lampbox.commands, lampbox.tui, lampbox.bench)
    lampbox.lab    orchestration: the only floor that uses both the engine and the store
    lampbox.store  persistence of engine types (DuckDB)
    lampbox.engine pure computation
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lampbox"
# floor -> the lampbox packages it must not import (front ends are above everything)
FORBIDDEN = {
    "engine": ("lampbox.store", "lampbox.lab", "lampbox.bench", "lampbox.commands", "lampbox.tui", "lampbox.cli", "duckdb"),
    "store": ("lampbox.lab", "lampbox.bench", "lampbox.commands", "lampbox.tui", "lampbox.cli"),
    "lab": ("lampbox.bench", "lampbox.commands", "lampbox.tui", "lampbox.cli"),
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at module level or inside functions (line, name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violations(floor: str) -> list[str]:
    bad = []
    for path in sorted((PACKAGE / floor).rglob("*.py")):
        for line, module in imported_modules(path):
            if any(module == name or module.startswith(name + ".") for name in FORBIDDEN[floor]):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return bad


def test_no_floor_imports_a_floor_above_it() -> None:
    for floor in FORBIDDEN:
        assert violations(floor) == [], f"lampbox/{floor} climbs up"


def test_the_static_check_sees_function_local_imports(tmp_path: Path) -> None:
    source = tmp_path / "module.py"
    source.write_text("def f():\n    from lampbox.store import runs\n    import duckdb\n")
    assert imported_modules(source) == [(2, "lampbox.store"), (3, "duckdb")]


def test_importing_every_engine_module_loads_neither_the_store_nor_duckdb() -> None:
    code = (
        "import sys, pkgutil, importlib, lampbox.engine\n"
        "for module in pkgutil.walk_packages(lampbox.engine.__path__, 'lampbox.engine.'):\n"
        "    importlib.import_module(module.name)\n"
        "print(','.join(sorted(name for name in sys.modules\n"
        "    if name == 'duckdb' or name.startswith(('duckdb.', 'lampbox.store', 'lampbox.lab')))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
