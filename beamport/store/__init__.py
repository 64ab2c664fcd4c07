"""Durable state behind one interface (base.Store); SqlStore serves SQLite and PostgreSQL."""

from pathlib import Path

from beamport.store.base import Store
from beamport.store.sql import SqlStore


def open_store(database_url: str | None, data_dir: Path) -> Store:
    """Open (and migrate) the store: `database_url` if given, else SQLite in `data_dir`."""
    if not database_url:
        data_dir.mkdir(parents=True, exist_ok=True)
        database_url = f"sqlite:///{(data_dir / 'beamport.db').resolve()}"
    store = SqlStore(database_url)
    store.migrate()
    return store


__all__ = ["Store", "SqlStore", "open_store"]
