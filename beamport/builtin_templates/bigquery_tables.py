"""The BigQuery table a template parameter names, as Beam's WriteToBigQuery takes it.

A table is PROJECT:DATASET.TABLE, PROJECT.DATASET.TABLE or DATASET.TABLE (in the job's project). Beam resolves
a table given as a ValueProvider without its project to `None:DATASET.TABLE`, so the templates hand
WriteToBigQuery a callable that gives the whole name, read at run time."""

from __future__ import annotations

from apache_beam.options.value_provider import RuntimeValueProvider


def full_table_name(spec: str) -> str:
    """PROJECT:DATASET.TABLE for any of the three forms (the job's project for DATASET.TABLE)."""
    if ":" in spec:
        return spec
    parts = spec.split(".")
    if len(parts) == 3:
        return f"{parts[0]}:{parts[1]}.{parts[2]}"
    if len(parts) == 2:
        project = RuntimeValueProvider.get_value("project", str, "")
        if not project:
            raise ValueError(f"The table {spec!r} names no project, and the job has none: give PROJECT:DATASET.TABLE.")
        return f"{project}:{spec}"
    raise ValueError(f"{spec!r} is not a BigQuery table: PROJECT:DATASET.TABLE or DATASET.TABLE.")


class TableOf:
    """WriteToBigQuery's table callable: the table a parameter names (else `fallback`'s, with a suffix)."""

    def __init__(self, table, fallback=None, suffix: str = ""):
        self.table, self.fallback, self.suffix = table, fallback, suffix  # ValueProviders

    def __call__(self, unused_row) -> str:
        spec = self.table.get() if self.table else None
        if not spec and self.fallback is not None:
            spec = self.fallback.get() + self.suffix
        if not spec:
            raise ValueError("No BigQuery table was given.")
        return full_table_name(spec)
