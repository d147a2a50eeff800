"""Per-request LoRA adapters on one loaded transformers model (the hf backend's, for OPPU).

peft injects each adapter's layers into the loaded model's own modules, so the model object
the backend generates with stays the same; before each batch the backend makes one adapter
active (or none: the adapter layers are switched off and the model computes as it was
loaded). At most `capacity` adapters stay loaded; the least recently used one is dropped
first. A model's own trained adapter is merged at load (hf.apply_adapter), so per-request
adapters stand on it: base + task adapter + a user's adapter, as OPPU serves them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lampbox.errors import InputFileError, LampboxError

DEFAULT_CAPACITY = 8


def adapter_folder(adapter: str) -> Path:
    """The folder with adapter_config.json: the path itself, or a trained model's adapter/."""
    path = Path(adapter).expanduser()
    if (path / "adapter" / "adapter_config.json").is_file():
        path = path / "adapter"
    if not (path / "adapter_config.json").is_file():
        raise InputFileError(path, "not a LoRA adapter folder (no adapter_config.json)")
    return path.resolve()


def check_adapter_base(folder: Path, base_fingerprint: str | None, model_name: str) -> None:
    """Refuse an adapter trained on other base weights. A trained adapter's record (the
    lampbox-model.json of the model folder holding adapter/) names the fingerprint of the base
    it was trained on; a bare peft folder names none and is taken as it is."""
    from lampbox.model_folders import TRAINED_INFO, read_info

    if base_fingerprint is None or folder.name != "adapter" or not (folder.parent / TRAINED_INFO).is_file():
        return
    info = read_info(folder.parent)
    theirs = info.get("base_fingerprint")
    if theirs and str(theirs).split("+", 1)[0] != base_fingerprint:
        raise LampboxError(
            f"adapter {folder.parent.name!r} was trained on {info.get('base')!r}, whose weights differ from "
            f"the loaded model {model_name!r} ({folder.parent / TRAINED_INFO}); serve it with the model it was trained on"
        )


def adapter_version(folder: Path) -> tuple[str, tuple[int, ...]]:
    """The folder and its files' modification times: an adapter rewritten in place loads anew."""
    stamps = tuple(p.stat().st_mtime_ns for p in sorted(folder.iterdir()) if p.is_file())
    return str(folder), stamps


class AdapterSlots:
    """A bounded LRU of peft adapters on `model`, one active at a time."""

    def __init__(
        self,
        model: Any,
        capacity: int = DEFAULT_CAPACITY,
        *,
        model_name: str = "",
        base_fingerprint: Callable[[], str | None] | None = None,
    ) -> None:
        if capacity < 1:
            raise LampboxError("the adapter capacity must be at least 1")
        self.model = model
        self.capacity = capacity
        self.model_name = model_name
        self._base_fingerprint = base_fingerprint  # the loaded base's, computed at the first load
        self._peft: Any = None  # the PeftModel around `model`, made with the first adapter
        self._loaded: OrderedDict[tuple[str, tuple[int, ...]], str] = OrderedDict()  # version -> peft name
        self._made = 0
        # what the peft layers are set to: each change is a pass over every adapted module
        self._enabled = False
        self._current: str | None = None

    @property
    def loaded(self) -> list[str]:
        """The loaded adapters' folders, least recently used first."""
        return [folder for folder, _ in self._loaded]

    def activate(self, adapter: str | None) -> None:
        """Make `adapter` (a path) the one the model computes with; None: no adapter."""
        if adapter is None:
            if self._peft is not None and self._enabled:
                self._peft.base_model.disable_adapter_layers()
                self._enabled = False
            return
        version = adapter_version(adapter_folder(adapter))
        name = self._loaded.get(version)
        if name is None:
            name = self._load(version[0])
            self._loaded[version] = name
        self._loaded.move_to_end(version)
        if not self._enabled:
            self._peft.base_model.enable_adapter_layers()
            self._enabled = True
        if self._current != name:
            self._peft.set_adapter(name, inference_mode=True)
            self._current = name
        self._evict()  # after the switch: the adapter dropped is never the active one

    def _load(self, folder: str) -> str:
        try:
            from peft import PeftModel
        except ImportError as error:
            raise LampboxError("adapters need peft (pip install 'lampbox[torch]')") from error
        if self._base_fingerprint is not None:
            check_adapter_base(Path(folder), self._base_fingerprint(), self.model_name)
        self._made += 1
        name = f"a{self._made}"
        self._current = None  # loading may change the active adapter: set it again
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, folder, adapter_name=name)
                self._enabled = True
            else:
                self._peft.load_adapter(folder, adapter_name=name)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise InputFileError(Path(folder), f"not a LoRA adapter for this model ({error})") from error
        self._peft.eval()
        return name

    def _evict(self) -> None:
        while len(self._loaded) > self.capacity:
            _, name = self._loaded.popitem(last=False)
            self._peft.delete_adapter(name)
