"""The identity-and-access aggregate: service accounts, public keys, IAM policies, access tokens, audit log.

Rows only; what they mean (who may do what) is the service layer's (service/iam.py).
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from beamport.store.tables import access_tokens, audit_log, iam_policies, service_account_keys, service_accounts


class AlreadyExists(Exception):
    """A row with that key exists."""


@dataclass
class ServiceAccountRecord:
    email: str
    project_id: str
    create_us: int
    display_name: str = ""
    description: str = ""


@dataclass
class KeyRecord:
    key_id: str
    email: str
    public_key: str  # PEM
    create_us: int
    expire_us: int | None = None


@dataclass
class TokenRecord:
    token_hash: str
    email: str
    key_id: str
    expire_us: int
    job: str = ""  # the one job a token exchanged for an executor is good for


@dataclass
class AuditRecord:
    time_us: int
    project_id: str
    principal: str
    method: str
    resource: str
    status: str
    message: str = ""
    caller_ip: str = ""
    seq: int | None = None


class IamStore(abc.ABC):
    @abc.abstractmethod
    def add_account(self, account: ServiceAccountRecord) -> None: ...  # AlreadyExists

    @abc.abstractmethod
    def get_account(self, email: str) -> ServiceAccountRecord | None: ...

    @abc.abstractmethod
    def list_accounts(self, project_id: str) -> list[ServiceAccountRecord]: ...

    @abc.abstractmethod
    def delete_account(self, email: str) -> bool:
        """Delete the account with its keys and its tokens."""

    @abc.abstractmethod
    def add_key(self, key: KeyRecord) -> None: ...

    @abc.abstractmethod
    def get_key(self, key_id: str) -> KeyRecord | None: ...

    @abc.abstractmethod
    def list_keys(self, email: str) -> list[KeyRecord]: ...

    @abc.abstractmethod
    def delete_key(self, key_id: str) -> bool:
        """Delete the key and every token issued for it."""

    @abc.abstractmethod
    def get_policy(self, resource: str) -> tuple[int, str]:
        """(version, bindings JSON); (0, "[]") for a resource that has no policy yet."""

    @abc.abstractmethod
    def list_policies(self) -> list[tuple[str, str]]:
        """Every resource's (resource, bindings JSON)."""

    @abc.abstractmethod
    def set_policy(self, resource: str, expected_version: int, bindings: str) -> bool:
        """Replace the policy if its version is still `expected_version`; False if it changed meanwhile."""

    @abc.abstractmethod
    def add_token(self, token: TokenRecord, expired_before_us: int) -> None:
        """Keep an issued token (by its hash); tokens expired before `expired_before_us` go."""

    @abc.abstractmethod
    def get_token(self, token_hash: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    def delete_token(self, token_hash: str) -> bool: ...

    @abc.abstractmethod
    def add_audit(self, records: list[AuditRecord]) -> None: ...

    @abc.abstractmethod
    def list_audit(self, project_id: str | None, limit: int, before_seq: int | None = None) -> list[AuditRecord]:
        """Newest first; project_id None: every project's."""


class SqlIamStore(IamStore):
    """On the same database (and engine) as the rest of the store."""

    def __init__(self, store):
        self.engine = store.engine
        self._writer = store._writer
        self._write_lock = store._write_lock

    @contextlib.contextmanager
    def _write(self):
        with self._write_lock, self._writer.begin() as conn:
            yield conn

    def add_account(self, account: ServiceAccountRecord) -> None:
        try:
            with self._write() as conn:
                conn.execute(insert(service_accounts).values(**vars(account)))
        except IntegrityError:
            raise AlreadyExists(account.email) from None

    def get_account(self, email: str) -> ServiceAccountRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(service_accounts).where(service_accounts.c.email == email)).first()
        return ServiceAccountRecord(**row._mapping) if row else None

    def list_accounts(self, project_id: str) -> list[ServiceAccountRecord]:
        stmt = select(service_accounts).where(service_accounts.c.project_id == project_id)
        with self.engine.connect() as conn:
            return [
                ServiceAccountRecord(**row._mapping) for row in conn.execute(stmt.order_by(service_accounts.c.email))
            ]

    def delete_account(self, email: str) -> bool:
        with self._write() as conn:
            conn.execute(delete(access_tokens).where(access_tokens.c.email == email))
            conn.execute(delete(service_account_keys).where(service_account_keys.c.email == email))
            return conn.execute(delete(service_accounts).where(service_accounts.c.email == email)).rowcount > 0

    def add_key(self, key: KeyRecord) -> None:
        with self._write() as conn:
            conn.execute(insert(service_account_keys).values(**vars(key)))

    def get_key(self, key_id: str) -> KeyRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(service_account_keys).where(service_account_keys.c.key_id == key_id)).first()
        return KeyRecord(**row._mapping) if row else None

    def list_keys(self, email: str) -> list[KeyRecord]:
        stmt = select(service_account_keys).where(service_account_keys.c.email == email)
        with self.engine.connect() as conn:
            return [KeyRecord(**row._mapping) for row in conn.execute(stmt.order_by(service_account_keys.c.create_us))]

    def delete_key(self, key_id: str) -> bool:
        with self._write() as conn:
            conn.execute(delete(access_tokens).where(access_tokens.c.key_id == key_id))
            return (
                conn.execute(delete(service_account_keys).where(service_account_keys.c.key_id == key_id)).rowcount > 0
            )

    def get_policy(self, resource: str) -> tuple[int, str]:
        stmt = select(iam_policies.c.version, iam_policies.c.bindings).where(iam_policies.c.resource == resource)
        with self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return (row.version, row.bindings) if row else (0, "[]")

    def list_policies(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            return [(row.resource, row.bindings) for row in conn.execute(select(iam_policies))]

    def set_policy(self, resource: str, expected_version: int, bindings: str) -> bool:
        try:
            with self._write() as conn:
                if expected_version == 0:
                    conn.execute(insert(iam_policies).values(resource=resource, version=1, bindings=bindings))
                    return True
                changed = conn.execute(
                    update(iam_policies)
                    .where(iam_policies.c.resource == resource, iam_policies.c.version == expected_version)
                    .values(version=expected_version + 1, bindings=bindings)
                ).rowcount
                return changed == 1
        except IntegrityError:  # another writer created it first
            return False

    def add_token(self, token: TokenRecord, expired_before_us: int) -> None:
        with self._write() as conn:
            conn.execute(delete(access_tokens).where(access_tokens.c.expire_us < expired_before_us))
            conn.execute(insert(access_tokens).values(**vars(token)))

    def get_token(self, token_hash: str) -> TokenRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(access_tokens).where(access_tokens.c.token_hash == token_hash)).first()
        return TokenRecord(**row._mapping) if row else None

    def delete_token(self, token_hash: str) -> bool:
        with self._write() as conn:
            return conn.execute(delete(access_tokens).where(access_tokens.c.token_hash == token_hash)).rowcount > 0

    def add_audit(self, records: list[AuditRecord]) -> None:
        if not records:
            return
        rows = [{k: v for k, v in vars(r).items() if k != "seq"} for r in records]
        with self._write() as conn:
            conn.execute(insert(audit_log), rows)

    def list_audit(self, project_id: str | None, limit: int, before_seq: int | None = None) -> list[AuditRecord]:
        stmt = select(audit_log)
        if project_id is not None:
            stmt = stmt.where(audit_log.c.project_id == project_id)
        if before_seq is not None:
            stmt = stmt.where(audit_log.c.seq < before_seq)
        with self.engine.connect() as conn:
            return [
                AuditRecord(**row._mapping) for row in conn.execute(stmt.order_by(audit_log.c.seq.desc()).limit(limit))
            ]
