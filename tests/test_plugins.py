"""One registry shape (lampbox.engine.registry) and plugins by entry point.

The plugin is a tiny package written into a temporary folder with its `*.dist-info` (METADATA
and entry_points.txt), which importlib.metadata finds on sys.path exactly as it finds an
installed distribution: the subprocesses below see it through PYTHONPATH."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import lampbox

from lampbox.engine.registry import DuplicateNameError, Registry
from lampbox.errors import UnknownNameError

# -- the Registry class --------------------------------------------------------------------------


def test_a_taken_name_is_an_error_naming_both_registrants_unless_replacing() -> None:
    registry: Registry[object] = Registry("widget", None)
    registry.register("w", "json:dumps", description="first")
    with pytest.raises(DuplicateNameError) as caught:
        registry.register("w", "json:loads")
    message = str(caught.value)
    assert "widget 'w' is already registered by json:dumps" in message and "json:loads registers it too" in message
    assert "replace=True" in message and "\n" not in message
    assert registry.get("w") is json.dumps  # the first registration stands
    registry.register("w", json.loads, replace=True)
    assert registry.get("w") is json.loads and registry.descriptions() == {"w": ""}
    registry.unregister("w")
    with pytest.raises(UnknownNameError, match="unknown widget 'w'"):
        registry.get("w")


def test_a_lazy_target_is_imported_only_when_chosen_and_once() -> None:
    calls: list[str] = []

    def resolve(name: str, target: object) -> object:
        calls.append(name)
        if not callable(target):
            raise TypeError("not callable")
        return target

    registry: Registry[object] = Registry("widget", None, resolve=resolve)
    registry.register("codecs", "lampbox_no_such_module_for_tests:thing")
    registry.register("dumps", "json:dumps")
    assert registry.names() == ["codecs", "dumps"] and calls == []
    assert registry.get("dumps") is json.dumps and registry.get("dumps") is json.dumps
    assert calls == ["dumps"]
    with pytest.raises(ModuleNotFoundError):  # a built-in's own error is not disguised
        registry.get("codecs")


def test_the_four_registries_share_the_shape_and_the_duplicate_rule() -> None:
    from lampbox.engine.generation.registry import BACKENDS, register_backend
    from lampbox.engine.methods import IPA, METHODS, register_method
    from lampbox.engine.retrieval.registry import RETRIEVERS, register_retriever
    from lampbox.engine.training.registry import OBJECTIVES, objective_class, register_objective

    assert [r.group for r in (BACKENDS, METHODS, RETRIEVERS, OBJECTIVES)] == [
        "lampbox.backends", "lampbox.methods", "lampbox.retrievers", "lampbox.objectives",
    ]  # fmt: skip
    for register, args in (
        (register_backend, ("dummy", "x:Y")),
        (register_method, (IPA(),)),
        (register_retriever, ("bm25", "x:Y")),
        (register_objective, ("ipa", "x:Y")),
    ):
        with pytest.raises(DuplicateNameError, match="already registered by lampbox"):
            register(*args)  # type: ignore[operator]
    assert {"ipa", "fid", "ropg", "rspg"} <= set(OBJECTIVES.names())
    assert objective_class("ipa").__name__ == "SFTObjective"


# -- a plugin package ------------------------------------------------------------------------------

PLUGIN = '''
"""A third-party lampbox plugin: a backend, a method, a retriever and an objective."""
from lampbox.engine.generation.dummy import DummyGenerator
from lampbox.engine.methods import IPA
from lampbox.engine.retrieval.simple import RecencyRetriever
from lampbox.engine.training.sft import SFTObjective


class ShoutGenerator(DummyGenerator):
    """The dummy's answer, upper-cased."""

    backend = "shout"

    def _answer(self, request, params):
        return super()._answer(request, params).upper()


class ShoutIPA(IPA):
    name = "shout-ipa"


class OldestFirst(RecencyRetriever):
    name = "oldest"


class ShoutObjective(SFTObjective):
    pass
'''

ENTRY_POINTS = """
[lampbox.backends]
shout = lampbox_shout_plugin:ShoutGenerator
dummy = lampbox_shout_plugin:ShoutGenerator
broken = lampbox_shout_missing_module:Generator

[lampbox.methods]
shout-ipa = lampbox_shout_plugin:ShoutIPA

[lampbox.retrievers]
oldest = lampbox_shout_plugin:OldestFirst

[lampbox.objectives]
shout = lampbox_shout_plugin:ShoutObjective
"""


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    """A folder holding the plugin package and its dist-info, as pip would install it."""
    return install_plugin(tmp_path / "site", "shout", PLUGIN, ENTRY_POINTS)


def install_plugin(folder: Path, name: str, source: str, entry_points: str) -> Path:
    """Package lampbox_NAME_plugin (source as its __init__) with a dist-info naming its entry
    points, in folder, as pip would install it; returns folder (for PYTHONPATH)."""
    (folder / f"lampbox_{name}_plugin").mkdir(parents=True)
    (folder / f"lampbox_{name}_plugin" / "__init__.py").write_text(source)
    info = folder / f"lampbox_{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lampbox-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return folder


def with_plugin(plugin_path: Path, **extra: str) -> dict[str, str]:
    pythonpath = os.pathsep.join(filter(None, [str(plugin_path), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": pythonpath, **extra}


LOOKUPS = """
import json, sys
import lampbox.engine, lampbox.engine.methods, lampbox.engine.training.registry
from lampbox.engine.generation import registry
from lampbox.engine.methods import get_method, method_names
from lampbox.engine.retrieval import create_retriever, retriever_names
from lampbox.engine.training.registry import objective_class, objective_names
from lampbox.errors import LampboxError

seen = {"imported_at_start": "lampbox_shout_plugin" in sys.modules}
seen["backends"] = registry.known_backends()
seen["imported_after_listing"] = "lampbox_shout_plugin" in sys.modules
seen["dummy"] = registry.backend_class("dummy").__module__
from lampbox.engine.generation.base import GenerationParams
seen["shout"] = registry.load_generator("shout", "m").generate(["one two three"], GenerationParams())
try:
    registry.backend_class("broken")
except LampboxError as error:
    seen["broken"] = str(error)
seen["methods"] = method_names()
seen["method"] = type(get_method("shout-ipa")).__module__
seen["retrievers"] = retriever_names()
seen["retriever"] = type(create_retriever("oldest")).__name__
seen["objectives"] = objective_names()
seen["objective"] = objective_class("shout").__name__
seen["heavy"] = [name for name in ("torch", "textual", "llama_cpp") if name in sys.modules]
print(json.dumps(seen))
"""


def test_a_plugin_registers_each_kind_by_entry_point_lazily(plugin_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LOOKUPS], capture_output=True, text=True, env=with_plugin(plugin_path), check=True
    )
    seen = json.loads(result.stdout)
    # entry points are read at the first lookup; the plugin's module loads only when chosen
    assert seen["imported_at_start"] is False and seen["imported_after_listing"] is False
    assert {"shout", "broken", "dummy", "llamacpp"} <= set(seen["backends"])
    assert seen["dummy"] == "lampbox.engine.generation.dummy"  # a plugin cannot take a built-in's name
    assert seen["shout"] == ["ONE TWO THREE"]
    assert "backend 'broken' (entry point broken = lampbox_shout_missing_module:Generator" in seen["broken"]
    assert "package lampbox-shout 0.1" in seen["broken"] and "ModuleNotFoundError" in seen["broken"]
    assert "shout-ipa" in seen["methods"] and seen["method"] == "lampbox_shout_plugin"
    assert "oldest" in seen["retrievers"] and seen["retriever"] == "OldestFirst"
    assert "shout" in seen["objectives"] and seen["objective"] == "ShoutObjective"
    assert seen["heavy"] == []  # the plugin's objective module (sft) imports no torch either
    # the clash is one warning line naming the entry point; the rest of lampbox is untouched
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1, result.stderr
    assert "plugin left out" in warnings[0] and "entry point dummy = lampbox_shout_plugin:ShoutGenerator" in warnings[0]
    assert "backend 'dummy' is already registered by lampbox.engine.generation.dummy:DummyGenerator" in warnings[0]


def test_bench_runs_a_plugin_backend_by_name(plugin_path: Path, demo_db: Path, tmp_path: Path) -> None:
    env = with_plugin(plugin_path, LAMPBOX_HOME=str(tmp_path / "home"))
    out = tmp_path / "predictions"
    common = ["bench", "--task", "LaMP_7", "--retrievers", "none", "--limit", "2", "--db", str(demo_db), "--json"]
    result = lampbox(*common, "--backend", "shout", "--out", str(out), env=env)
    (row,) = json.loads(result.stdout)["rows"]
    assert row["label"] == "no personalization shout:smollm2-135m-instruct" and row["spec"]["backend"] == "shout"
    (written,) = out.glob("*.json")
    outputs = [entry["output"] for entry in json.loads(written.read_text())["golds"]]
    plain = lampbox(*common, "--backend", "dummy", "--out", str(tmp_path / "plain"), env=env)
    assert json.loads(plain.stdout)["rows"][0]["run_key"] != row["run_key"]
    (dummy_file,) = (tmp_path / "plain").glob("*.json")
    dummy_outputs = [entry["output"] for entry in json.loads(dummy_file.read_text())["golds"]]
    assert outputs == [text.upper() for text in dummy_outputs] and outputs != dummy_outputs
    # a plugin that fails to import is one clear line when chosen, and a non-zero exit
    broken = lampbox(*common, "--backend", "broken", env=env, check=False)
    assert broken.returncode != 0 and "Traceback" not in broken.stderr
    assert "entry point broken = lampbox_shout_missing_module:Generator" in broken.stderr.strip().splitlines()[-1]


def test_unreadable_plugin_metadata_is_a_warning_not_a_crash(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from importlib import metadata

    def broken_metadata(**_: object) -> list[object]:
        raise OSError("corrupt RECORD")

    monkeypatch.setattr(metadata, "entry_points", broken_metadata)
    registry: Registry[object] = Registry("widget", "widgets")
    registry.register("w", "json:dumps")
    with caplog.at_level(logging.WARNING, logger="lampbox"):
        assert registry.names() == ["w"]
    assert [r.getMessage() for r in caplog.records] == [
        "lampbox: could not read the lampbox.widgets plugins: OSError: corrupt RECORD"
    ]
