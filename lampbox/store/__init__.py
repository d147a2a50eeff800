"""The DuckDB store: the only code that talks to the database."""

from lampbox.store.core import DatasetSummary, Store, StoreBusy, open_store

__all__ = ["DatasetSummary", "Store", "StoreBusy", "open_store"]
