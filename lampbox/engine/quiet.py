"""Keep third-party chatter off stderr: lampbox prints its own progress."""

from __future__ import annotations

import functools
from typing import Any


def quiet_transformers() -> None:
    """No transformers progress bars where lampbox loads, converts or saves a model ("Loading
    weights", "Writing model shards", "Converting and de-quantizing GGUF tensors"): they would
    print into the bench's output, and lampbox's own progress and logs say what is happening."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()  # transformers' and huggingface_hub's own bars
    _quiet_gguf_reader()


def _quiet_gguf_reader() -> None:
    """The GGUF reader draws its bar with tqdm directly, past disable_progress_bar(): its
    module's tqdm is replaced by one that is disabled (once)."""
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        return
    original = getattr(gguf_utils, "tqdm", None)
    if original is None or getattr(original, "lampbox_quiet", False):
        return

    @functools.wraps(original)
    def silent_tqdm(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return original(*args, **kwargs)

    silent_tqdm.lampbox_quiet = True  # type: ignore[attr-defined]
    gguf_utils.tqdm = silent_tqdm


def quiet_training() -> None:
    """transformers' deprecation notices about its own internals (FutureWarning) are not the
    user's business during `lampbox train`."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\..*)?")
    quiet_transformers()
