"""The engine and the store stay light: heavy libraries load only when a backend is chosen."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("textual", "torch", "llama_cpp", "transformers", "sentence_transformers", "matplotlib")


def test_engine_and_store_do_not_import_heavy_libraries() -> None:
    code = (
        "import sys, pkgutil, importlib, lampbox.engine, lampbox.store, lampbox.store.importer\n"
        "for module in pkgutil.walk_packages(lampbox.engine.__path__, 'lampbox.engine.'):\n"
        "    importlib.import_module(module.name)\n"
        f"heavy = [name for name in {HEAVY!r} if name in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"imported at module level: {result.stdout.strip()}"


def test_cli_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from lampbox.cli import cli\n"
        "result = CliRunner().invoke(cli, ['data', '--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        f"print(','.join(name for name in {HEAVY!r} if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
