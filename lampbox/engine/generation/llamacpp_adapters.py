"""Per-request LoRA adapters on one loaded llama.cpp model (the llamacpp backend's, for OPPU).

llama-cpp-python's `Llama(lora_path=)` fixes one adapter at load; this goes through the
low-level API instead. Each adapter (a peft folder) is converted once to a GGUF LoRA for the
loaded base (gguf_lora.gguf_adapter, cached beside it), initialised once on the model
(`llama_adapter_lora_init`), and made active on a context per request
(`llama_set_adapters_lora`, which llama.cpp applies at compute time: the quantized weights are
never touched). At most `capacity` adapters stay initialised (and any still set on another
context, which may be decoding); the least recently used one is freed first. The model's own adapter (a trained LoRA model, or an
OPPU set's task adapter) is always active, under the request's: base + task adapter + a user's
adapter, as OPPU serves them.

llama.cpp reuses a context's KV cells without regard to the adapter they were computed under,
so a context whose adapters change has its memory cleared here.
"""

from __future__ import annotations

import ctypes
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from lampbox.engine.generation.hf_adapters import (
    DEFAULT_CAPACITY,
    adapter_folder,
    adapter_version,
    check_adapter_base,
)
from lampbox.errors import InputFileError, LampboxError


class GgufAdapters:
    """A bounded LRU of GGUF LoRA adapters initialised on one llama.cpp model."""

    def __init__(
        self,
        model: Any,
        base_gguf: Path,
        model_name: str,
        *,
        base_fingerprint: str | None = None,
        own_adapter: str | None = None,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        if capacity < 1:
            raise LampboxError("the adapter capacity must be at least 1")
        self._model = model  # a llama_model pointer
        self.base_gguf = base_gguf
        self.model_name = model_name
        self.base_fingerprint = base_fingerprint
        self.capacity = capacity
        # an adapter folder's version (path and file times) -> its llama_adapter_lora pointer
        self._loaded: OrderedDict[tuple[str, tuple[int, ...]], Any] = OrderedDict()
        self._active: dict[int, tuple[int, ...]] = {}  # context address -> its adapters' addresses
        self._lock = threading.Lock()  # the Llama's context and the batch decoder's, from two threads
        self._own = self._init(own_adapter) if own_adapter is not None else None

    @property
    def loaded(self) -> list[str]:
        """The adapter folders initialised for requests, least recently used first."""
        return [folder for folder, _ in self._loaded]

    def _init(self, adapter: str) -> Any:
        """Convert (once), check and initialise one adapter on the model."""
        import llama_cpp

        from lampbox.engine.generation.gguf_lora import gguf_adapter

        folder = adapter_folder(adapter)
        check_adapter_base(folder, self.base_fingerprint, self.model_name)
        path = gguf_adapter(folder, self.base_gguf)
        pointer = llama_cpp.llama_adapter_lora_init(self._model, str(path).encode())
        if not pointer:
            raise InputFileError(path, f"llama.cpp could not load this LoRA adapter for {self.model_name} ({folder})")
        return pointer

    def _pointer(self, adapter: str) -> Any:
        """The initialised adapter of a folder (initialised now if it is not)."""
        key = adapter_version(adapter_folder(adapter))  # an adapter rewritten in place loads anew
        pointer = self._loaded.get(key)
        if pointer is None:
            pointer = self._loaded[key] = self._init(adapter)
        self._loaded.move_to_end(key)
        return pointer

    def apply(self, context: Any, adapter: str | None) -> bool:
        """Make `adapter` (None: the model's own adapter alone) the one `context` (a raw
        llama_context pointer) computes with; its memory is cleared when that changes. True
        when the adapters changed."""
        with self._lock:
            return self._apply(context, adapter)

    def _apply(self, context: Any, adapter: str | None) -> bool:
        import llama_cpp

        pointers = [p for p in (self._own, self._pointer(adapter) if adapter is not None else None) if p is not None]
        wanted = tuple(ctypes.cast(p, ctypes.c_void_p).value or 0 for p in pointers)
        key = ctypes.cast(context, ctypes.c_void_p).value or 0
        if self._active.get(key, ()) == wanted:
            self._evict()
            return False
        array = (llama_cpp.llama_adapter_lora_p_ctypes * len(pointers))(*pointers) if pointers else None
        scales = (ctypes.c_float * len(pointers))(*[1.0] * len(pointers)) if pointers else None
        if llama_cpp.llama_set_adapters_lora(context, array, len(pointers), scales) != 0:
            raise LampboxError(f"{self.model_name}: llama.cpp could not set the LoRA adapter {adapter}")
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(context), True)
        self._active[key] = wanted
        self._evict()  # after the switch: the adapter dropped is never the one just set
        return True

    def forget(self, context: Any) -> None:
        """A context is about to be freed: nothing to take off it later."""
        with self._lock:
            self._active.pop(ctypes.cast(context, ctypes.c_void_p).value or 0, None)

    def _evict(self) -> None:
        """Free the least recently used adapters beyond the bound, never one set on a context."""
        import llama_cpp

        in_use = {address for active in self._active.values() for address in active}
        for key in list(self._loaded):
            if len(self._loaded) <= self.capacity:
                return
            pointer = self._loaded[key]
            if (ctypes.cast(pointer, ctypes.c_void_p).value or 0) not in in_use:
                del self._loaded[key]
                llama_cpp.llama_adapter_lora_free(pointer)
