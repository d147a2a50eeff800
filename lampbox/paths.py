"""Where lampbox keeps its store and caches by default."""

from __future__ import annotations

import os
from pathlib import Path

DB_ENV = "LAMPBOX_DB"
HOME_ENV = "LAMPBOX_HOME"


def data_home() -> Path:
    """The user's lampbox data folder (LAMPBOX_HOME overrides the platform default)."""
    override = os.environ.get(HOME_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("lampbox", appauthor=False))


def default_db_path() -> Path:
    """The store file: LAMPBOX_DB if set, else lampbox.duckdb in the data folder."""
    override = os.environ.get(DB_ENV)
    if override:
        return Path(override).expanduser()
    return data_home() / "lampbox.duckdb"


def cache_dir(name: str) -> Path:
    """A named cache folder under the data folder (downloads, converted models, ...)."""
    path = data_home() / "cache" / name
    path.mkdir(parents=True, exist_ok=True)
    return path
