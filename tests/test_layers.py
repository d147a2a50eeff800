"""The floors: the engine is pure (no store, no DuckDB), each floor imports only those below.

    front ends (lampbox.cli, lampbox.commands, lampbox.tui, lampbox.bench)
    lampbox.lab    orchestration: the only floor that uses both the engine and the store
                   (with lampbox/fetch.py and lampbox/lamp6.py: data brought in and imported)
    lampbox.store  persistence of engine types (DuckDB)
    lampbox.engine pure computation; inside it, inference never imports training
    ground         lampbox/*.py the others use (errors, paths, models, ...): imports no floor
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lampbox"
ABOVE_GROUND = (
    "lampbox.engine", "lampbox.store", "lampbox.lab", "lampbox.bench", "lampbox.commands", "lampbox.tui",
    "lampbox.cli", "lampbox.fetch", "lampbox.lamp6", "duckdb",
)  # fmt: skip
# The modules at the package root, by floor: a new one must be placed here.
ROOT_MODULES = {
    "ground": ("__init__", "errors", "paths", "models", "lampfiles", "model_folders", "crashnote", "supervise", "demo"),
    "lab": ("fetch", "lamp6"),
    "front": ("__main__", "cli"),
}
# The engine's training side: inference (generation, retrieval, methods, a trained retriever's
# ranking, ...) must not import it.
TRAINING = (
    "lampbox.engine.training", "lampbox.engine.ropg.objective", "lampbox.engine.ropg.kd",
    "lampbox.engine.ropg.rl", "lampbox.engine.rspg.selector",
)  # fmt: skip
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


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def is_within(module: str, names: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def climbing(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in paths:
        for line, module in imported_modules(path):
            if is_within(module, forbidden):
                bad.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    return bad


def violations(floor: str) -> list[str]:
    return climbing(sorted((PACKAGE / floor).rglob("*.py")), FORBIDDEN[floor])


def ground_modules() -> list[Path]:
    return [PACKAGE / f"{name}.py" for name in ROOT_MODULES["ground"]]


def inference_modules() -> list[Path]:
    return [path for path in sorted((PACKAGE / "engine").rglob("*.py")) if not is_within(module_name(path), TRAINING)]


def test_no_floor_imports_a_floor_above_it() -> None:
    for floor in FORBIDDEN:
        assert violations(floor) == [], f"lampbox/{floor} climbs up"
    assert climbing(ground_modules(), ABOVE_GROUND) == [], "the ground floor climbs up"
    lab_at_root = [PACKAGE / f"{name}.py" for name in ROOT_MODULES["lab"]]
    assert climbing(lab_at_root, FORBIDDEN["lab"]) == []


def test_every_module_at_the_package_root_has_a_floor() -> None:
    placed = {name for names in ROOT_MODULES.values() for name in names}
    assert sorted(path.stem for path in PACKAGE.glob("*.py")) == sorted(placed)


def test_inference_does_not_import_training() -> None:
    assert climbing(inference_modules(), TRAINING) == []
    code = (
        "import sys, importlib\n"
        f"for name in {[module_name(path) for path in inference_modules()]!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(','.join(sorted(name for name in sys.modules if name.startswith({TRAINING!r}))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", "an inference module loads training code"


def test_the_ground_floor_loads_no_floor_above_it() -> None:
    names = [module_name(path) for path in ground_modules()]
    code = (
        f"import sys, importlib\nfor name in {names!r}:\n    importlib.import_module(name)\n"
        f"print(','.join(sorted(name for name in sys.modules if name.startswith({ABOVE_GROUND!r}))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


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
