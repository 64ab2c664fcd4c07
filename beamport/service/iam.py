"""Identity and access: who calls (service accounts, their keys and tokens) and what they may do (IAM policies).

Google's model, so that Google's own clients work unchanged: service accounts named
`NAME@PROJECT.iam.gserviceaccount.com`, key files in Google's JSON format whose `token_uri` is this server,
bearer tokens that are either access tokens answered at that `token_uri` or JWTs self-signed with the key,
and policies binding members to Dataflow's roles on a project, or on the organization (every project).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import orjson

from beamport import wire
from beamport.errors import RPC_CODE, ApiError, invalid_argument, not_found
from beamport.service import keys
from beamport.service.paging import decode_token, encode_token, page_size
from beamport.service.roles import ADMIN, DEVELOPER, PERMISSIONS, WORKER
from beamport.store.iam import AlreadyExists, AuditRecord, IamStore, KeyRecord, ServiceAccountRecord, TokenRecord

ORGANIZATION = "organizations/beamport"  # the resource whose policy applies to every project
EMAIL_DOMAIN = "iam.gserviceaccount.com"
ADMIN_EMAIL = f"beamport-admin@beamport.{EMAIL_DOMAIN}"
LOCAL_WORKERS_EMAIL = f"beamport-local-workers@beamport.{EMAIL_DOMAIN}"
METADATA_EMAIL = f"beamport-metadata@beamport.{EMAIL_DOMAIN}"  # the metadata server's tokens (http/metadata.py)
OWN_ACCOUNTS = (ADMIN_EMAIL, LOCAL_WORKERS_EMAIL, METADATA_EMAIL)  # Beamport's: not deleted, governed organization-wide
TOKEN_PREFIX = "bp."  # Beamport's access tokens: opaque, kept by their hash
TOKEN_LIFETIME_S = 3600
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"  # RFC 8693
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
JOB_TOKEN_LIFETIME_S = 7 * 24 * 3600  # a job's executor cannot refresh: its token lasts the run (revoked at its end)
# What an executor's token may do: the calls of the work it runs, on its own job (and nothing else).
JOB_TOKEN_PERMISSIONS = frozenset(
    {
        "dataflow.workItems.update",
        "dataflow.workItems.sendMessage",
        "dataflow.jobs.get",
        "dataflow.jobs.getPipeline",
    }
)
_JOB_RESOURCE = re.compile(
    r"projects/([a-z0-9][-a-z0-9.:_]{0,127})/locations/([a-z][-a-z0-9]{0,62})/jobs/([A-Za-z0-9][-A-Za-z0-9_]{0,127})\Z"
)
# A self-signed JWT is for the API it names (aud), or carries a scope that covers Dataflow.
DATAFLOW_AUDIENCE = "https://dataflow.googleapis.com/"
DATAFLOW_SCOPES = frozenset(
    {"https://www.googleapis.com/auth/cloud-platform", "https://www.googleapis.com/auth/compute"}
)
SIGN_IN_CODE_S = 24 * 3600
SESSION_S = 12 * 3600
CACHE_S = 5.0  # how long a policy read may be reused (writes through this server clear it at once)
_PROJECT_ID = re.compile(r"[a-z0-9][-a-z0-9.:_]{0,127}\Z")
_ACCOUNT_ID = re.compile(r"[a-z]([-a-z0-9]{4,28}[a-z0-9])\Z")
_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
    "authentication credential."
)


@dataclass(frozen=True)
class Principal:
    """Who a call is from: a service account, or `anonymous` when the server runs without authentication."""

    email: str
    key_id: str = ""
    csrf: str = ""  # a console session's CSRF token
    job: str = ""  # projects/P/locations/L/jobs/J: a token exchanged down to one job (a worker's executor)


ANONYMOUS = Principal("anonymous")


class OAuthError(Exception):
    """A refused token request, answered in OAuth 2.0's error shape (RFC 6749 5.2)."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error, self.description = error, description


def account_resource(project_id: str, email: str) -> str:
    return f"projects/{project_id}/serviceAccounts/{email}"


class IamService:
    def __init__(self, store: IamStore, enabled: bool = True, clock=wire.now_us):
        self.store = store
        self.enabled = enabled
        self.clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[Principal, float]] = {}  # bearer -> (principal, valid until, monotonic)
        self._grants: dict[tuple[str, str], tuple[frozenset[str], float]] = {}  # (email, project) -> permissions
        self._sign_in_codes: dict[str, tuple[Principal, float]] = {}
        self._sessions: dict[str, tuple[Principal, float]] = {}

    # -- service accounts and keys (IAM API v1) ---------------------------------------------------

    def create_account(self, project_id: str, body: dict) -> dict:
        account_id = body.get("accountId")
        if not isinstance(account_id, str) or not _ACCOUNT_ID.match(account_id):
            raise invalid_argument(
                f"accountId {account_id!r} must be 6 to 30 lowercase letters, digits or hyphens, starting with a "
                "letter and not ending with a hyphen."
            )
        details = body.get("serviceAccount") or {}
        if not isinstance(details, dict):
            raise invalid_argument("serviceAccount must be an object.")
        record = ServiceAccountRecord(
            email=f"{account_id}@{project_id}.{EMAIL_DOMAIN}",
            project_id=project_id,
            create_us=self.clock(),
            display_name=str(details.get("displayName") or "")[:100],
            description=str(details.get("description") or "")[:256],
        )
        try:
            self.store.add_account(record)
        except AlreadyExists:
            raise ApiError(
                "ALREADY_EXISTS", f"Service account {account_id} already exists within project {project_id}."
            ) from None
        return _render_account(record)

    def get_account(self, project_id: str, email: str) -> dict:
        return _render_account(self._account(project_id, email))

    def list_accounts(self, project_id: str) -> dict:
        accounts = [_render_account(a) for a in self.store.list_accounts(project_id)]
        return {"accounts": accounts} if accounts else {}

    def delete_account(self, project_id: str, email: str) -> dict:
        self._account(project_id, email)
        if email in OWN_ACCOUNTS:
            raise ApiError("FAILED_PRECONDITION", f"{email} is Beamport's own account and cannot be deleted.")
        self.store.delete_account(email)
        self._forget(lambda p: p.email == email)
        return {}

    def create_key(self, project_id: str, email: str, root_url: str, valid_for_s: float | None = None) -> dict:
        """A new key of the account; its private half is in the answer (`privateKeyData`) and nowhere else."""
        account = self._account(project_id, email)
        key_id, private_pem, public_pem = keys.new_key_pair()
        now = self.clock()
        record = KeyRecord(
            key_id, email, public_pem, now, None if valid_for_s is None else now + int(valid_for_s * 1e6)
        )
        self.store.add_key(record)
        data = keys.key_file(email, account.project_id, key_id, private_pem, root_url)
        return {
            **_render_key(account.project_id, record),
            "privateKeyType": "TYPE_GOOGLE_CREDENTIALS_FILE",
            "privateKeyData": base64.b64encode(json.dumps(data, indent=2).encode()).decode(),
        }

    def list_keys(self, project_id: str, email: str) -> dict:
        account = self._account(project_id, email)
        return {"keys": [_render_key(account.project_id, k) for k in self.store.list_keys(email)]}

    def delete_key(self, project_id: str, email: str, key_id: str) -> dict:
        self._account(project_id, email)
        key = self.store.get_key(key_id)
        if key is None or key.email != email:
            raise not_found(f"Service account key {key_id} does not exist.")
        self.store.delete_key(key_id)
        self._forget(lambda p: p.key_id == key_id)
        return {}

    def account_scope(self, project_id: str, email: str) -> str:
        """The resource whose policy governs an account: its project; the organization for Beamport's own."""
        if email in OWN_ACCOUNTS:
            return ORGANIZATION
        if project_id != "-":
            return project_id
        account = self.store.get_account(email)
        if account is None:
            raise not_found(f"Service account {account_resource(project_id, email)} does not exist.")
        return account.project_id

    def _account(self, project_id: str, email: str) -> ServiceAccountRecord:
        account = self.store.get_account(email)
        # `-` (any project) as in Google's API: the account names its project.
        if account is None or project_id not in ("-", account.project_id):
            raise not_found(f"Service account {account_resource(project_id, email)} does not exist.")
        return account

    # -- policies (Resource Manager's getIamPolicy / setIamPolicy) --------------------------------

    def get_policy(self, resource: str) -> dict:
        version, bindings = self.store.get_policy(resource)
        return _render_policy(version, orjson.loads(bindings))

    def set_policy(self, resource: str, body: dict) -> dict:
        policy = body.get("policy")
        if not isinstance(policy, dict):
            raise invalid_argument("policy is required.")
        bindings = self._check_bindings(policy.get("bindings") or [])
        version, _ = self.store.get_policy(resource)
        etag = policy.get("etag")
        if etag is not None and etag != _etag(version):
            raise _concurrent_change(resource)
        if not self.store.set_policy(resource, version, orjson.dumps(bindings).decode()):
            raise _concurrent_change(resource)
        with self._lock:
            self._grants.clear()
        return _render_policy(version + 1, bindings)

    def bind(self, resource: str, member: str, role: str) -> None:
        """Add one binding (the server's own, at start-up), retrying concurrent changes."""
        for _ in range(10):
            policy = self.get_policy(resource)
            bindings = policy.get("bindings", [])
            entry = next((b for b in bindings if b["role"] == role), None)
            if entry is not None and member in entry["members"]:
                return
            if entry is None:
                bindings.append({"role": role, "members": [member]})
            else:
                entry["members"].append(member)
            try:
                self.set_policy(resource, {"policy": {"bindings": bindings, "etag": policy["etag"]}})
                return
            except ApiError as error:
                if error.status != "ABORTED":
                    raise
        raise _concurrent_change(resource)

    def _check_bindings(self, bindings) -> list[dict]:
        if not isinstance(bindings, list):
            raise invalid_argument("policy.bindings must be a list.")
        merged: dict[str, set[str]] = {}
        for i, binding in enumerate(bindings):
            role = binding.get("role") if isinstance(binding, dict) else None
            if not isinstance(role, str) or role not in PERMISSIONS:
                raise invalid_argument(
                    f"policy.bindings[{i}].role {role!r} is not a role of this server; the roles are "
                    f"{', '.join(sorted(PERMISSIONS))}."
                )
            members = binding.get("members") or []
            if not isinstance(members, list):
                raise invalid_argument(f"policy.bindings[{i}].members must be a list.")
            for member in members:
                self._check_member(member, i)
            merged.setdefault(role, set()).update(members)
        return [{"role": role, "members": sorted(members)} for role, members in sorted(merged.items()) if members]

    def _check_member(self, member, i: int) -> None:
        if member == "allAuthenticatedUsers":
            return
        if member == "allUsers":
            raise invalid_argument("allUsers cannot be bound: every call to this server is authenticated.")
        kind, _, email = member.partition(":") if isinstance(member, str) else ("", "", "")
        if kind != "serviceAccount":
            raise invalid_argument(
                f"policy.bindings[{i}] member {member!r} is not serviceAccount:EMAIL or allAuthenticatedUsers."
            )
        if self.store.get_account(email) is None:
            raise invalid_argument(f"Service account {email} does not exist.")

    # -- authentication ---------------------------------------------------------------------------

    def cached(self, authorization: str | None) -> Principal | None:
        """The principal of a bearer token verified recently (no store read), else None."""
        if not self.enabled:
            return ANONYMOUS
        if not authorization or authorization[:7].lower() != "bearer ":
            return None
        cached = self._tokens.get(authorization[7:].strip())
        return cached[0] if cached is not None and cached[1] > time.monotonic() else None

    def authenticate(self, authorization: str | None, host: str = "") -> Principal | None:
        """The caller named by an `Authorization: Bearer` header; None without one; UNAUTHENTICATED if invalid."""
        if not self.enabled:
            return ANONYMOUS
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError("UNAUTHENTICATED", _UNAUTHENTICATED)
        cached = self._tokens.get(token)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        principal, valid_until_us = self._verify_bearer(token, host)
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[token] = (principal, time.monotonic() + (valid_until_us - self.clock()) / 1e6)
        return principal

    def _verify_bearer(self, token: str, host: str) -> tuple[Principal, int]:
        now = self.clock()
        if token.startswith(TOKEN_PREFIX):
            record = self.store.get_token(_hash(token))
            if record is None or record.expire_us <= now:
                raise ApiError("UNAUTHENTICATED", _UNAUTHENTICATED)
            return Principal(record.email, record.key_id, job=record.job), record.expire_us
        try:
            claims, key = self._verified_jwt(token)
        except keys.InvalidJwt as exc:
            raise ApiError("UNAUTHENTICATED", f"{_UNAUTHENTICATED} ({exc})") from None
        audiences = {
            DATAFLOW_AUDIENCE,
            DATAFLOW_AUDIENCE.rstrip("/"),
            f"http://{host}/",
            f"https://{host}/",
            f"http://{host}",
            f"https://{host}",
        }
        scopes = set(str(claims.get("scope", "")).split())
        if claims.get("aud") not in audiences and not scopes & DATAFLOW_SCOPES:
            raise ApiError(
                "UNAUTHENTICATED", f"{_UNAUTHENTICATED} (the JWT is for {claims.get('aud')!r}, not this API)"
            )
        valid_until = int(claims["exp"] * 1e6)
        if key.expire_us is not None:
            valid_until = min(valid_until, key.expire_us)
        return Principal(key.email, key.key_id), valid_until

    def _verified_jwt(self, token: str) -> tuple[dict, KeyRecord]:
        key_id = keys.unverified_key_id(token)
        key = self.store.get_key(key_id)
        if key is None:
            raise keys.InvalidJwt(f"key {key_id} does not exist (deleted?)")
        if key.expire_us is not None and key.expire_us <= self.clock():
            raise keys.InvalidJwt(f"key {key_id} has expired")
        claims = keys.verify(token, key_id, key.public_key)
        if claims["iss"] != key.email:
            raise keys.InvalidJwt(f"key {key_id} is not {claims['iss']}'s")
        return claims, key

    def grant_token(self, form: dict, host: str = "") -> dict:
        """The token endpoint (`token_uri`): an access token for a JWT-bearer assertion signed with a key, or
        (RFC 8693 token exchange) one job's token for a worker's access token."""
        if form.get("grant_type") == TOKEN_EXCHANGE:
            return self._exchange(form, host)
        if form.get("grant_type") != JWT_BEARER:
            raise OAuthError("unsupported_grant_type", f"Only {JWT_BEARER} and {TOKEN_EXCHANGE} are supported.")
        try:
            claims, key = self._verified_jwt(form.get("assertion") or "")
        except keys.InvalidJwt as exc:
            raise OAuthError("invalid_grant", f"Invalid JWT: {exc}") from None
        if urlsplit(str(claims.get("aud", ""))).path != "/token":
            raise OAuthError("invalid_grant", "Invalid JWT: the audience must be this server's token_uri.")
        return self._issue(Principal(key.email, key.key_id), TOKEN_LIFETIME_S, key.expire_us)

    def _exchange(self, form: dict, host: str) -> dict:
        """A token good for one job only, for a worker's executor, whose user code must not act for the worker."""
        if form.get("subject_token_type", ACCESS_TOKEN_TYPE) != ACCESS_TOKEN_TYPE:
            raise OAuthError("invalid_request", f"subject_token_type must be {ACCESS_TOKEN_TYPE}.")
        try:
            subject = self.authenticate(f"Bearer {form.get('subject_token') or ''}", host)
        except ApiError:
            raise OAuthError("invalid_grant", "The subject_token is not a valid access token.") from None
        match = _JOB_RESOURCE.match(form.get("resource") or "")
        if subject is None or subject.job or match is None:
            raise OAuthError("invalid_request", "resource must be projects/P/locations/L/jobs/J, for a worker's token.")
        try:
            self.authorize(subject, "dataflow.workItems.update", match.group(1))
        except ApiError as error:
            raise OAuthError("invalid_grant", error.message) from None
        key = self.store.get_key(subject.key_id)
        return self._issue(
            Principal(subject.email, subject.key_id, job=match.group(0)),
            JOB_TOKEN_LIFETIME_S,
            key.expire_us if key else None,
        )

    def _issue(self, principal: Principal, lifetime_s: int, key_expire_us: int | None) -> dict:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        expire = now + lifetime_s * 1_000_000
        if key_expire_us is not None:
            expire = min(expire, key_expire_us)
        record = TokenRecord(_hash(token), principal.email, principal.key_id, expire, principal.job)
        self.store.add_token(record, expired_before_us=now)
        return {"access_token": token, "expires_in": max(1, (expire - now) // 1_000_000), "token_type": "Bearer"}

    def revoke(self, token: str) -> None:
        """RFC 7009 revocation (as Google's revoke endpoint: whoever holds a token may revoke it)."""
        if token.startswith(TOKEN_PREFIX):
            self.store.delete_token(_hash(token))
            with self._lock:
                self._tokens.pop(token, None)

    def _forget(self, which) -> None:
        """Drop cached tokens and sessions of principals that lost their key or account."""
        with self._lock:
            for cache in (self._tokens, self._sessions, self._sign_in_codes):
                for token in [t for t, (p, _) in cache.items() if which(p)]:
                    del cache[token]
            self._grants.clear()

    # -- authorization ----------------------------------------------------------------------------

    def authorize(
        self, principal: Principal | None, permission: str, project_id: str | None, job_id: str | None = None
    ) -> None:
        """Refuse unless the principal holds the permission on the project (`-` or None: on some project); a
        token exchanged down to one job holds only its own job's calls."""
        if principal is None:
            raise ApiError("UNAUTHENTICATED", _UNAUTHENTICATED)
        if principal is ANONYMOUS:
            return
        if principal.job:
            # A job token's resource is one this pattern matched when it was exchanged: no match holds nothing.
            granted = _JOB_RESOURCE.match(principal.job)
            project, _, job = granted.groups() if granted else (None, None, None)
            if (
                not granted
                or permission not in JOB_TOKEN_PERMISSIONS
                or project_id != project
                or job_id not in (None, job)
            ):
                raise ApiError(
                    "PERMISSION_DENIED",
                    f"Permission '{permission}' denied: this token is good for {principal.job} only.",
                )
        if project_id in (None, "-"):
            if self.projects_with(principal, permission) != set():
                return
        elif permission in self._permissions(principal.email, project_id):
            return
        on = f"project '{project_id}'" if project_id not in (None, "-") else "any project"
        raise ApiError("PERMISSION_DENIED", f"Permission '{permission}' denied on {on} for {principal.email}.")

    def projects_with(self, principal: Principal, permission: str) -> set[str] | None:
        """The projects on which the principal holds the permission; None: every project."""
        if principal is ANONYMOUS or permission in self._permissions(principal.email, ORGANIZATION):
            return None
        found = set()
        for resource, bindings in self.store.list_policies():
            if resource != ORGANIZATION and permission in _granted(orjson.loads(bindings), principal.email):
                found.add(resource)
        return found

    def _permissions(self, email: str, project_id: str) -> frozenset[str]:
        cached = self._grants.get((email, project_id))
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        bound = _granted(orjson.loads(self.store.get_policy(ORGANIZATION)[1]), email)
        if project_id != ORGANIZATION:
            bound |= _granted(orjson.loads(self.store.get_policy(project_id)[1]), email)
        granted = frozenset(bound)
        with self._lock:
            if len(self._grants) > 10_000:  # callers name projects: bound what they can make us keep
                self._grants.clear()
            self._grants[(email, project_id)] = (granted, time.monotonic() + CACHE_S)
        return granted

    def decides_at_once(self, principal: Principal | None, project_id: str | None) -> bool:
        """Whether authorize() needs no store read for this call (so it may run on the event loop)."""
        if principal is None or principal is ANONYMOUS or not self.enabled:
            return True
        if project_id in (None, "-"):
            return False
        cached = self._grants.get((principal.email, project_id))
        return cached is not None and cached[1] > time.monotonic()

    # -- the server's own accounts ----------------------------------------------------------------

    def ensure_admin(self, key_path: Path, root_url: str) -> bool:
        """On the first start: the admin account, bound to roles/dataflow.admin on every project, and its key
        written to key_path (0600). True if it was created now."""
        if self.store.get_account(ADMIN_EMAIL) is not None:
            return False
        try:
            self.store.add_account(
                ServiceAccountRecord(ADMIN_EMAIL, "beamport", self.clock(), "Beamport administrator")
            )
        except AlreadyExists:  # another server on the same database made it
            return False
        self.bind(ORGANIZATION, f"serviceAccount:{ADMIN_EMAIL}", ADMIN)
        _write_private(key_path, self._key_file_of(self.create_key("-", ADMIN_EMAIL, root_url)))
        return True

    def local_worker_credentials(self, key_path: Path, root_url: str) -> None:
        """A fresh key for this server's local workers (roles/dataflow.worker on every project), written to
        key_path (0600); the keys of earlier starts are deleted."""
        if self.store.get_account(LOCAL_WORKERS_EMAIL) is None:
            try:
                self.store.add_account(
                    ServiceAccountRecord(LOCAL_WORKERS_EMAIL, "beamport", self.clock(), "Local workers")
                )
            except AlreadyExists:
                pass
        self.bind(ORGANIZATION, f"serviceAccount:{LOCAL_WORKERS_EMAIL}", WORKER)
        for old in self.store.list_keys(LOCAL_WORKERS_EMAIL):
            self.store.delete_key(old.key_id)
        _write_private(key_path, self._key_file_of(self.create_key("-", LOCAL_WORKERS_EMAIL, root_url)))

    def metadata_credentials(self, project_id: str, root_url: str) -> str:
        """The metadata server's account, bound to roles/dataflow.developer on `project_id` alone, and a fresh key
        its tokens are issued under (answered: the key id). The keys of earlier starts are deleted, and with them
        the tokens they issued: a metadata token lasts an hour at most, and no longer than the server."""
        if self.store.get_account(METADATA_EMAIL) is None:
            try:
                self.store.add_account(
                    ServiceAccountRecord(METADATA_EMAIL, "beamport", self.clock(), "Metadata server (loopback)")
                )
            except AlreadyExists:
                pass
        self.bind(project_id, f"serviceAccount:{METADATA_EMAIL}", DEVELOPER)
        for old in self.store.list_keys(METADATA_EMAIL):
            self.store.delete_key(old.key_id)
        self._forget(lambda p: p.email == METADATA_EMAIL)
        return self.create_key("-", METADATA_EMAIL, root_url)["name"].rsplit("/", 1)[-1]

    def metadata_token(self, key_id: str) -> dict:
        """An access token of the metadata server's account (OAuth's token answer)."""
        return self._issue(Principal(METADATA_EMAIL, key_id), TOKEN_LIFETIME_S, None)

    def temporary_key(self, principal: Principal, root_url: str, valid_for_s: float) -> tuple[str, dict]:
        """(key id, key file) of a short-lived key of the caller's own account, for a process that acts for it
        (a flex template's launcher); delete it with drop_temporary_key when the process is done."""
        answer = self.create_key("-", principal.email, root_url, valid_for_s)
        return answer["name"].rsplit("/", 1)[-1], self._key_file_of(answer)

    def drop_temporary_key(self, principal: Principal, key_id: str) -> None:
        self.store.delete_key(key_id)
        self._forget(lambda p: p.key_id == key_id)

    @staticmethod
    def _key_file_of(answer: dict) -> dict:
        return json.loads(base64.b64decode(answer["privateKeyData"]))

    # -- console sessions -------------------------------------------------------------------------

    def sign_in_code(self, principal: Principal) -> str:
        """A one-time code that signs the console in as the principal (the link `beamport serve` prints); it
        lapses with the key that asked for it."""
        code = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            _drop_expired(self._sign_in_codes, now)
            self._sign_in_codes[code] = (Principal(principal.email, principal.key_id), now + SIGN_IN_CODE_S)
        return code

    def sign_in(self, code: str) -> tuple[str, Principal] | None:
        """Use a sign-in code: (session id, principal) of a new console session, or None."""
        now = time.monotonic()
        with self._lock:
            entry = self._sign_in_codes.pop(code, None)
            if entry is None or entry[1] < now:
                return None
            _drop_expired(self._sessions, now)
            session_id = secrets.token_urlsafe(32)
            principal = Principal(entry[0].email, entry[0].key_id, csrf=secrets.token_urlsafe(24))
            self._sessions[session_id] = (principal, now + SESSION_S)
        return session_id, principal

    def session(self, session_id: str) -> Principal | None:
        entry = self._sessions.get(session_id)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else None

    def sign_out(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    # -- the audit log ----------------------------------------------------------------------------

    def audit(
        self,
        principal: Principal | None,
        method: str,
        project_id: str,
        resource: str,
        status: str,
        message: str = "",
        caller_ip: str = "",
    ) -> None:
        # What a refused request named goes in as it came, made storable: no NUL, bounded (a project id that is
        # not one is kept in the resource alone).
        project = project_id if project_id and (_PROJECT_ID.match(project_id) or project_id == ORGANIZATION) else ""
        record = AuditRecord(
            self.clock(),
            project,
            principal.email if principal else "",
            method,
            _storable(resource, 2000),
            status,
            _storable(message, 1000),
            caller_ip[:64],
        )
        self.store.add_audit([record])

    def list_audit(self, project_id: str | None, requested_size: int = 0, token: str | None = None) -> dict:
        limit = page_size(requested_size, 100, 1000)
        records = self.store.list_audit(project_id, limit + 1, decode_token("audit", token))
        answer: dict = {}
        if records:
            answer["entries"] = [_render_audit(r) for r in records[:limit]]
        if len(records) > limit:
            last = records[limit - 1].seq
            assert last is not None  # read from the store, which numbers every record
            answer["nextPageToken"] = encode_token("audit", last)
        return answer


def _storable(text: str, limit: int) -> str:
    return text.replace("\x00", "\\0")[:limit]


def _drop_expired(entries: dict, now: float) -> None:
    for key in [k for k, (_, until) in entries.items() if until < now]:
        del entries[key]


def _granted(bindings: list[dict], email: str) -> set[str]:
    member = f"serviceAccount:{email}"
    granted: set[str] = set()
    for binding in bindings:
        members = binding.get("members", ())
        if member in members or "allAuthenticatedUsers" in members:
            granted |= PERMISSIONS.get(binding.get("role") or "", frozenset())
    return granted


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _etag(version: int) -> str:
    return base64.b64encode(f"v{version}".encode()).decode()


def _concurrent_change(resource: str) -> ApiError:
    return ApiError("ABORTED", f"There were concurrent policy changes to {resource}. Read the policy again and retry.")


def _render_policy(version: int, bindings: list[dict]) -> dict:
    policy: dict = {"version": 1, "etag": _etag(version)}
    if bindings:
        policy["bindings"] = bindings
    return policy


def _render_account(account: ServiceAccountRecord) -> dict:
    unique_id = str(int(hashlib.sha256(account.email.encode()).hexdigest()[:15], 16))
    out = {
        "name": account_resource(account.project_id, account.email),
        "projectId": account.project_id,
        "uniqueId": unique_id,
        "email": account.email,
        "oauth2ClientId": unique_id,
    }
    if account.display_name:
        out["displayName"] = account.display_name
    if account.description:
        out["description"] = account.description
    return out


def _render_key(project_id: str, key: KeyRecord) -> dict:
    out = {
        "name": f"{account_resource(project_id, key.email)}/keys/{key.key_id}",
        "validAfterTime": wire.format_timestamp_us(key.create_us),
        "validBeforeTime": wire.format_timestamp_us(key.expire_us or 253402300799_000000),
        "keyAlgorithm": "KEY_ALG_RSA_2048",
        "keyOrigin": "GOOGLE_PROVIDED",
        "keyType": "USER_MANAGED",
    }
    return out


def _render_audit(record: AuditRecord) -> dict:
    project = record.project_id
    payload = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "authenticationInfo": {"principalEmail": record.principal} if record.principal else {},
        "methodName": record.method,
        "resourceName": record.resource,
        "serviceName": "dataflow.googleapis.com",
        "status": {} if record.status == "OK" else {"code": RPC_CODE.get(record.status, 2), "message": record.message},
        "requestMetadata": {"callerIp": record.caller_ip} if record.caller_ip else {},
    }
    parent = project if project.startswith("organizations/") else f"projects/{project}" if project else ORGANIZATION
    log_name = f"{parent}/logs/cloudaudit.googleapis.com%2Factivity"
    return {
        "logName": log_name,
        "insertId": str(record.seq),
        "timestamp": wire.format_timestamp_us(record.time_us),
        "severity": "NOTICE" if record.status == "OK" else "ERROR",
        "resource": {"type": "project", "labels": {"project_id": project}}
        if parent.startswith("projects/")
        else ({"type": "organization", "labels": {"organization_id": ORGANIZATION.split("/")[1]}}),
        "protoPayload": payload,
    }


def _write_private(path: Path, data: dict) -> None:
    """Write a key file readable by its owner alone (created so, never world-readable for an instant)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)
