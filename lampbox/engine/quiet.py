"""Keep third-party chatter off stderr: lampbox prints its own progress."""

from __future__ import annotations


def quiet_transformers() -> None:
    """No "Loading weights" bar per model load (a load takes about a second; lampbox's own
    progress and logs say what is happening). Conversion bars are left alone."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def quiet_training() -> None:
    """transformers' deprecation notices about its own internals (FutureWarning) are not the
    user's business during `lampbox train`."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers(\..*)?")
    quiet_transformers()
