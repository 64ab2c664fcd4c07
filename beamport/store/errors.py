"""What a store write can refuse."""


class StoreError(Exception):
    pass


class VersionConflict(StoreError):
    """A row changed between read and write; the caller re-reads and tries again."""


class ActiveNameTaken(StoreError):
    """Another active job already has this (project, location, name)."""
