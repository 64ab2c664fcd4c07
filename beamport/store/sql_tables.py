"""The SQL tables aggregate: the catalog of local files that SQL queries can read by name (docs/sql.md)."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select

from beamport.store.database import Database
from beamport.store.tables import sql_tables


@dataclass
class SqlTableRecord:
    project_id: str
    name: str
    path: str
    format: str
    schema: str  # JSON: [{name, type}]
    create_us: int


class TableCatalog(abc.ABC):
    @abc.abstractmethod
    def put(self, table: SqlTableRecord) -> None:
        """Add a table to the catalog, or replace the one of that name."""

    @abc.abstractmethod
    def list(self, project_id: str, names: Sequence[str] | None = None) -> list[SqlTableRecord]:
        """The project's tables (of these names), by name."""

    @abc.abstractmethod
    def delete(self, project_id: str, name: str) -> bool: ...


class SqlTableCatalog(TableCatalog):
    def __init__(self, db: Database):
        self.db = db

    def put(self, table: SqlTableRecord) -> None:
        with self.db.writing() as conn:
            self.db.upsert(conn, sql_tables, ["project_id", "name"], [vars(table)])

    def list(self, project_id: str, names=None) -> list[SqlTableRecord]:
        stmt = select(*sql_tables.c).where(sql_tables.c.project_id == project_id)
        if names is not None:
            stmt = stmt.where(sql_tables.c.name.in_(list(names)))
        with self.db.reading() as conn:
            return [SqlTableRecord(**row._mapping) for row in conn.execute(stmt.order_by(sql_tables.c.name))]

    def delete(self, project_id: str, name: str) -> bool:
        with self.db.writing() as conn:
            done = conn.execute(
                delete(sql_tables).where(sql_tables.c.project_id == project_id, sql_tables.c.name == name)
            )
        return done.rowcount == 1
