"""The model manifest: known models by name, and how a model name resolves to weights.

A model name is a manifest name ("smollm2-135m-instruct"), a path to a .gguf file, a local
Hugging Face folder, or a hub id ("org/name"). Resolving never loads weights.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from lampbox.errors import InputFileError, LampboxError, UnknownNameError
from lampbox.model_folders import (
    TRAINED_INFO,
    TRAINED_NAME,
    model_names,
    model_path,
    models_dir,
    read_info,
    record_kind,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

MANIFEST_ENV = "LAMPBOX_MODELS_MANIFEST"
# Shipped as package data (pyproject.toml: [tool.setuptools.package-data]), so a non-editable
# install finds it too. Relative `path` entries in it resolve against this file's folder.
PACKAGED_MANIFEST = Path(__file__).resolve().parent / "model_manifest.toml"

ModelFormat = Literal["gguf", "hf"]
# How a manifest model can be derived from another one, and the quantizations it can take.
DERIVATIONS = ("requantize",)
DERIVED_QUANTS = ("Q4_0", "Q8_0")
# (source file, target file, quant) -> writes the target
Derive = Callable[[Path, Path, str], None]
# derivation -> how its file is written and the recipe stamped beside it. This floor imports no
# backend: the engine registers "requantize" (llama.cpp, lampbox.engine.generation.registry).
_DERIVERS: dict[str, tuple[Derive, str]] = {}


def register_derivation(derivation: str, write: Derive, recipe: str) -> None:
    """How a manifest's `derive = DERIVATION` models are written, and the recipe recorded
    beside each file (a changed recipe writes the file again)."""
    _DERIVERS[derivation] = (write, recipe)


@dataclass(frozen=True)
class ModelEntry:
    """One model named in the manifest."""

    name: str
    format: ModelFormat
    chat: bool
    description: str = ""
    package: str | None = None
    file: str | None = None
    assemble: bool = False
    derive: str | None = None  # "requantize": written once from `source` (a manifest model)
    source: str | None = None
    quant: str | None = None  # the derived file's quantization, e.g. "Q4_0"
    path: str | None = None
    hub_id: str | None = None
    install: str | None = None
    license: str | None = None


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's weights are, without loading them.

    `location` is a local file (gguf) or folder (hf), or a hub id when `is_hub_id`.
    `chat` is None when it must be detected from the model (its tokenizer's chat template).
    """

    name: str
    format: ModelFormat
    location: str
    chat: bool | None
    is_hub_id: bool = False
    entry: ModelEntry | None = None
    adapter: str | None = None  # a trained LoRA adapter folder applied on top of `location`
    trained: dict[str, Any] | None = None  # a trained model's lampbox-model.json

    @property
    def path(self) -> Path:
        return Path(self.location)


def manifest_paths() -> list[Path]:
    """Manifests read, later ones overriding earlier: lampbox's own, then the user's.

    lampbox's own is the packaged model_manifest.toml, or $LAMPBOX_MODELS_MANIFEST instead;
    the user's is models.toml in the data folder.
    """
    from lampbox.paths import data_home

    override = os.environ.get(MANIFEST_ENV)
    first = Path(override).expanduser() if override else PACKAGED_MANIFEST
    return [first, data_home() / "models.toml"]


@lru_cache(maxsize=8)
def _read_manifest(path: Path, mtime_ns: int) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise InputFileError(path, f"not a valid TOML model manifest: {error}") from error


def _entry_from_table(name: str, table: dict[str, Any], manifest: Path) -> ModelEntry:
    model_format = table.get("format")
    if model_format not in ("gguf", "hf"):
        raise InputFileError(manifest, f"model {name!r}: format must be 'gguf' or 'hf'")
    derive = table.get("derive")
    if derive is not None:
        if derive not in DERIVATIONS:
            raise InputFileError(manifest, f"model {name!r}: derive must be one of {', '.join(DERIVATIONS)}")
        if not table.get("source") or table.get("quant") not in DERIVED_QUANTS:
            raise InputFileError(
                manifest,
                f"model {name!r}: derive = {derive!r} needs source (a manifest model) and quant "
                f"({', '.join(DERIVED_QUANTS)})",
            )
    path = table.get("path")
    if path is not None and not Path(path).expanduser().is_absolute():
        path = str(manifest.parent / path)
    return ModelEntry(
        name=name,
        format=model_format,
        chat=bool(table.get("chat", False)),
        description=str(table.get("description", "")),
        package=table.get("package"),
        file=table.get("file"),
        assemble=bool(table.get("assemble", False)),
        derive=derive,
        source=table.get("source"),
        quant=table.get("quant"),
        path=path,
        hub_id=table.get("hub_id"),
        install=table.get("install"),
        license=table.get("license"),
    )


def _merged_manifest() -> tuple[dict[str, ModelEntry], str, str]:
    """All known models by name, the default model's name and the interactive one's.

    `interactive` is the model the TUI generates with unless a pane chooses another; a
    manifest that sets `default` without `interactive` (say the user's models.toml) makes its
    default the interactive model too, so one line changes both."""
    entries: dict[str, ModelEntry] = {}
    default = interactive = "smollm2-135m-instruct"
    for manifest in manifest_paths():
        if not manifest.is_file():
            continue
        data = _read_manifest(manifest, manifest.stat().st_mtime_ns)
        if "default" in data:
            default = interactive = str(data["default"])
        interactive = str(data.get("interactive", interactive))
        for name, table in data.get("models", {}).items():
            entries[name] = _entry_from_table(name, table, manifest)
    return entries, default, interactive


def load_manifest() -> tuple[dict[str, ModelEntry], str]:
    """All known models by name, and the default model's name."""
    entries, default, _ = _merged_manifest()
    return entries, default


def known_models() -> list[str]:
    """Names of the models in the manifest."""
    return sorted(load_manifest()[0])


def default_model() -> str:
    """The manifest's default model name."""
    return load_manifest()[1]


def interactive_model() -> str:
    """The model the TUI's generation panes use unless one is chosen (the manifest's
    `interactive`)."""
    return _merged_manifest()[2]


def _package_folder(package: str) -> Path | None:
    """The folder of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _assembled_file(entry: ModelEntry) -> Path:
    """Run the package's assemble() once into lampbox's cache; later calls reuse the file."""
    from lampbox.paths import cache_dir

    assert entry.package and entry.file
    target = cache_dir("models") / entry.file
    if target.is_file():
        return target
    import importlib

    module = importlib.import_module(entry.package)
    partial = target.with_name(target.name + ".partial")
    written = Path(module.assemble(output_path=partial, overwrite=True))
    written.replace(target)
    return target


def _derived_file(entry: ModelEntry) -> Path:
    """Requantize the source model once into lampbox's cache; later calls reuse the file.

    A stamp beside the file records the source file (path, size, mtime) and the recipe: when
    either changes (a reinstalled package, a new recipe), the file is written again.
    """
    import json

    from lampbox.lampfiles import write_json_atomic
    from lampbox.paths import cache_dir

    assert entry.source and entry.quant
    source_entry = load_manifest()[0].get(entry.source)
    if source_entry is None or source_entry.format != "gguf" or source_entry.derive:
        raise LampboxError(
            f"model {entry.name!r} is derived from {entry.source!r}, which is not a GGUF model "
            "of the manifest"
        )
    try:
        source = Path(_entry_location(source_entry)[0])
    except LampboxError as error:
        raise LampboxError(f"model {entry.name!r} is derived from {entry.source!r}: {error}") from error
    assert entry.derive
    if entry.derive not in _DERIVERS:
        raise LampboxError(
            f"model {entry.name!r} is derived ({entry.derive}) and nothing that writes such models "
            "is loaded (import lampbox.engine.generation first)"
        )
    write, recipe = _DERIVERS[entry.derive]
    target = cache_dir("models") / (entry.file or f"{entry.name}.gguf")
    stamp_path = target.with_name(target.name + ".source.json")
    status = source.stat()
    stamp = {"source": str(source.resolve()), "size": status.st_size, "mtime_ns": status.st_mtime_ns,
             "quant": entry.quant, "recipe": recipe}  # fmt: skip
    if target.is_file() and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text(encoding="utf-8")) == stamp:
                return target
        except ValueError:
            pass  # a torn stamp: write both again
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    try:
        write(source, partial, entry.quant)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    write_json_atomic(stamp_path, stamp)
    return target


def _entry_location(entry: ModelEntry) -> tuple[str, bool]:
    """(location, is_hub_id) of a manifest entry; raises when it is not installed."""
    if entry.derive:
        return str(_derived_file(entry)), False
    if entry.package:
        folder = _package_folder(entry.package)
        if folder is None:
            how = f" ({entry.install})" if entry.install else ""
            raise LampboxError(
                f"model {entry.name!r} needs the Python package {entry.package!r}, "
                f"which is not installed{how}"
            )
        if entry.assemble:
            return str(_assembled_file(entry)), False
        assert entry.file, f"manifest entry {entry.name} has a package but no file"
        location = folder / entry.file
        if not location.exists():
            raise InputFileError(location, f"model {entry.name!r}: file missing from its package")
        return str(location), False
    if entry.path:
        location = Path(entry.path).expanduser()
        if not location.exists():
            raise InputFileError(location, f"model {entry.name!r}: no such file or folder")
        return str(location), False
    if entry.hub_id:
        return entry.hub_id, True
    raise LampboxError(
        f"model {entry.name!r} in the manifest says neither package, path nor hub_id"
    )


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def trained_models_dir() -> Path:
    """Where `lampbox train` keeps trained models: one folder per name."""
    return models_dir()


def trained_model_folder(name: str) -> Path | None:
    """The folder of a trained model called `name`, if there is one (inside the models folder)."""
    if not TRAINED_NAME.match(name):
        return None
    try:
        folder = model_path(name)
    except LampboxError:
        return None  # a link leading out of the models folder is not a trained model
    return folder if (folder / TRAINED_INFO).is_file() else None


def _resolve_trained(name: str, folder: Path) -> ResolvedModel:
    """A trained model: full weights in model/ (full, fid), or a LoRA adapter on its base model;
    an OPPU set as its task adapter; the kinds that generate nothing, one line each."""
    info_path = folder / TRAINED_INFO
    info = read_info(folder)
    kind = record_kind(info)
    if kind == "oppu":  # an OPPU set: the base with its task adapter; users' adapters per request
        task_adapter = resolve_model(str(info.get("task_adapter", "")))
        if task_adapter.adapter is None:
            raise InputFileError(info_path, f"an OPPU set whose task adapter {info.get('task_adapter')!r} is not a LoRA model")
        return ResolvedModel(
            name, task_adapter.format, task_adapter.location, info.get("chat", task_adapter.chat),
            task_adapter.is_hub_id, task_adapter.entry, adapter=task_adapter.adapter, trained=info,
        )  # fmt: skip
    if kind == "user-adapter":
        raise InputFileError(
            info_path,
            f"user {info.get('user')!r}'s adapter of an OPPU set: run the set with --method oppu "
            f"--model {str(info.get('name', folder.name)).rsplit('.u.', 1)[0]} --backend hf",
        )
    if kind == "retriever":
        raise LampboxError(f"{name!r} is a trained retriever, not a generator; rank with it as ropg:{name}")
    if kind == "selector":  # an RSPG selector picks among runs' outputs; it generates nothing
        raise LampboxError(f"{name!r} is an RSPG selector, not a generation model: `lampbox rspg apply {name} --bench BENCH`")
    if kind not in ("full", "fid", "lora"):
        raise InputFileError(info_path, f"unknown trained-model kind {kind!r}")
    weights = folder / ("adapter" if kind == "lora" else "model")
    if not weights.is_dir():
        raise InputFileError(
            info_path, f"names a {kind} model but {weights.name}/ is missing; retrain it or `lampbox models rm {folder.name}`"
        )
    if kind != "lora":
        return ResolvedModel(name, "hf", str(weights), info.get("chat"), trained=info)
    if "base" not in info:
        raise InputFileError(info_path, "a LoRA model record without its 'base' model")
    base = resolve_model(str(info["base"]))
    chat = info.get("chat", base.chat)
    return ResolvedModel(
        name, base.format, base.location, chat, base.is_hub_id, base.entry,
        adapter=str(weights), trained=info,
    )  # fmt: skip


def user_adapters(resolved: ResolvedModel) -> dict[str, str]:
    """An OPPU set's adapter folder per user id ({} for any other model); a user adapter whose
    folder is gone is a one-line error naming it."""
    info = resolved.trained or {}
    if info.get("kind") != "oppu":
        return {}
    folders = {}
    for user, entry in dict(info.get("users") or {}).items():
        folder = trained_model_folder(str(entry["adapter"]))
        if folder is None or not (folder / "adapter").is_dir():
            raise LampboxError(f"{resolved.name}: user {user!r}'s adapter {entry['adapter']!r} is missing; train the set again")
        folders[str(user)] = str(folder / "adapter")
    return folders


def resolve_model(name: str | None = None) -> ResolvedModel:
    """Resolve a model name (manifest name, trained model, .gguf path, HF folder or hub id)."""
    entries, default = load_manifest()
    name = name or default
    if name in entries:
        entry = entries[name]
        location, is_hub_id = _entry_location(entry)
        return ResolvedModel(name, entry.format, location, entry.chat, is_hub_id, entry)
    trained = trained_model_folder(name)
    if trained is not None:
        return _resolve_trained(name, trained)
    path = Path(name).expanduser()
    if path.is_dir() and (path / TRAINED_INFO).is_file():
        return _resolve_trained(name, path)
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise InputFileError(path, "no such GGUF file")
        return ResolvedModel(name, "gguf", str(path.resolve()), None)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputFileError(path, "not a Hugging Face model folder (no config.json)")
        return ResolvedModel(name, "hf", str(path.resolve()), None)
    if path.is_file():
        raise InputFileError(path, "not a model: expected a .gguf file or a Hugging Face folder")
    if _looks_like_hub_id(name):
        return ResolvedModel(name, "hf", name, None, is_hub_id=True)
    raise UnknownNameError(
        "model", name, list(entries) + _trained_names() + ["<path to a .gguf file>", "<HF folder>", "<org/hub-id>"]
    )


def _trained_names() -> list[str]:
    return model_names()
