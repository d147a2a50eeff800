"""The demo dataset shipped with lampbox (written for lampbox, not LaMP data)."""

from __future__ import annotations

from pathlib import Path


def demo_path() -> Path:
    """The folder of the packaged demo files (LaMP_7 format: dev_questions.json, ...)."""
    return Path(__file__).parent / "demo_data" / "LaMP_7"
