"""gcloud-like administration over the HTTP API: `beamport iam service-accounts` (and their keys), `beamport
projects` and `beamport organizations` (IAM policy bindings), `beamport logs audit`, `beamport console link`.

The calls are Google's IAM v1 and Resource Manager v1 ones (DataflowClient); what is decided here is only what
gcloud decides on the client side: a binding is added or removed by reading the policy, changing it and
writing it back with the etag read, again when someone else changed it meanwhile (ABORTED).
"""

from __future__ import annotations

import base64
import copy
import os
import random
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from tenacity import Retrying, retry_if_exception, stop_after_attempt

from beamport.cli.client import ApiCallError, ClientError
from beamport.cli.options import ApiOptions, Session, api_command
from beamport.cli.output import Format, Printer, short_time
from beamport.errors import RPC_CODE

app = typer.Typer(help="Identity and access: service accounts and their keys.", no_args_is_help=True)
service_accounts_app = typer.Typer(
    help="Service accounts: the identities clients and workers call as.", no_args_is_help=True
)
keys_app = typer.Typer(help="A service account's keys (Google-format JSON key files).", no_args_is_help=True)
app.add_typer(service_accounts_app, name="service-accounts")
service_accounts_app.add_typer(keys_app, name="keys")
projects_app = typer.Typer(help="A project's IAM policy: who holds which Dataflow role on it.", no_args_is_help=True)
organizations_app = typer.Typer(
    help="The organization's IAM policy: roles bound there hold on every project.", no_args_is_help=True
)
logs_app = typer.Typer(help="The server's audit log.", no_args_is_help=True)
console_app = typer.Typer(help="The web console.", no_args_is_help=True)

DEFAULT_ORGANIZATION = "beamport"
POLICY_ATTEMPTS = 5  # reads and writes of a policy before giving up on concurrent changes (gcloud retries too)
NO_EXPIRY_YEAR = "9999-"  # validBeforeTime of a key that never expires: 9999-12-31T23:59:59Z
_RPC_STATUS = {code: status for status, code in RPC_CODE.items()}

Email = Annotated[str, typer.Argument(help="The service account's email.", show_default=False)]
IamAccount = Annotated[str, typer.Option("--iam-account", help="The service account's email.", show_default=False)]
Member = Annotated[
    str,
    typer.Option("--member", help="serviceAccount:EMAIL or allAuthenticatedUsers.", show_default=False),
]
Role = Annotated[
    str,
    typer.Option(
        "--role",
        show_default=False,
        help="roles/dataflow.viewer, roles/dataflow.developer, roles/dataflow.admin or roles/dataflow.worker.",
    ),
]
ProjectId = Annotated[str, typer.Argument(help="The project's id.", show_default=False)]
OrganizationId = Annotated[str, typer.Argument(help="The organization (this server has one: beamport).")]


def _print_table(printer: Printer, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    if not rows:
        printer.note("Listed 0 items.")
        return
    table = Table(box=None, pad_edge=False, header_style="bold", show_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    printer._table(table)


# -- service accounts -----------------------------------------------------------------------------------


@service_accounts_app.command("create")
@api_command
def create_account(
    name: Annotated[
        str,
        typer.Argument(
            show_default=False,
            help="The account's id, 6-30 lowercase letters, digits and hyphens: its "
            "email is NAME@PROJECT.iam.gserviceaccount.com.",
        ),
    ],
    display_name: Annotated[str | None, typer.Option(help="A name to show for the account.")] = None,
    description: Annotated[str | None, typer.Option(help="What the account is for.")] = None,
    *,
    api: ApiOptions,
):
    """Create a service account in a project."""
    with api.session() as s:
        account = s.client.create_service_account(s.project, name, display_name, description)
        s.printer.document(account)
        s.printer.note(f"Created service account [{name}].")


@service_accounts_app.command("list")
@api_command
def list_accounts(
    *,
    api: ApiOptions,
):
    """List a project's service accounts."""
    with api.session() as s:
        accounts = s.client.list_service_accounts(s.project)
        if api.format is Format.json:
            s.printer.document(accounts)
            return
        rows = [(a.get("email", ""), a.get("displayName", ""), a.get("description", "")) for a in accounts]
        _print_table(s.printer, ("EMAIL", "DISPLAY_NAME", "DESCRIPTION"), rows)


@service_accounts_app.command("describe")
@api_command
def describe_account(email: Email, *, api: ApiOptions):
    """Show a service account."""
    with api.session(need_project=False) as s:
        s.printer.document(s.client.get_service_account(email))


@service_accounts_app.command("delete")
@api_command
def delete_account(email: Email, *, api: ApiOptions):
    """Delete a service account, its keys and its access tokens (they stop working at once)."""
    with api.session(need_project=False) as s:
        answer = s.client.delete_service_account(email)
        if api.format is Format.json:
            s.printer.document(answer)
        s.printer.note(f"Deleted service account [{email}].")


# -- keys -------------------------------------------------------------------------------------------------


def _key_id(key: dict) -> str:
    return key.get("name", "").rsplit("/", 1)[-1]


@keys_app.command("create")
@api_command
def create_key(
    key_file: Annotated[
        Path, typer.Argument(help="Where to write the key file (readable by you alone).", show_default=False)
    ],
    iam_account: IamAccount,
    *,
    api: ApiOptions,
):
    """Create a key and write its key file (GOOGLE_APPLICATION_CREDENTIALS for the CLI, workers, Google's
    clients); the server keeps no copy of its private half."""
    target = key_file.expanduser()
    if target.is_dir():
        raise typer.BadParameter(f"{key_file} is a directory.", param_hint="'KEY_FILE'")
    if not target.parent.is_dir():
        raise typer.BadParameter(f"the directory {target.parent} does not exist.", param_hint="'KEY_FILE'")
    with api.session(need_project=False) as s:
        # The file exists (owner-only, empty) before the key does: a place where it cannot be written
        # leaves no key behind, and the private key is never in a file anyone else may read.
        try:
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        except OSError as exc:
            raise ClientError(f"Cannot write the key file {key_file}: {exc.strerror or exc}") from None
        key = None
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)
                key = s.client.create_service_account_key(iam_account)
                handle.write(base64.b64decode(key["privateKeyData"]))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException as exc:
            Path(temporary).unlink(missing_ok=True)
            if key is not None and isinstance(exc, OSError):
                raise ClientError(
                    f"Key [{_key_id(key)}] was created but its key file could not be written ({exc}): delete it with "
                    f"`beamport iam service-accounts keys delete {_key_id(key)} --iam-account {iam_account}`."
                ) from None
            raise
        if api.format is Format.json:
            s.printer.document({k: v for k, v in key.items() if k != "privateKeyData"})
        s.printer.note(f"created key [{_key_id(key)}] of type [json] as [{key_file}] for [{iam_account}]")


@keys_app.command("list")
@api_command
def list_keys(iam_account: IamAccount, *, api: ApiOptions):
    """List a service account's keys."""
    with api.session(need_project=False) as s:
        keys = s.client.list_service_account_keys(iam_account)
        if api.format is Format.json:
            s.printer.document(keys)
            return
        rows = []
        for key in keys:
            expires = key.get("validBeforeTime", "")
            rows.append(
                (
                    _key_id(key),
                    short_time(key.get("validAfterTime")),
                    "never" if expires.startswith(NO_EXPIRY_YEAR) else short_time(expires),
                )
            )
        _print_table(s.printer, ("KEY_ID", "CREATED_AT (UTC)", "EXPIRES_AT (UTC)"), rows)


@keys_app.command("delete")
@api_command
def delete_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (40 hexadecimal digits).", show_default=False)],
    iam_account: IamAccount,
    *,
    api: ApiOptions,
):
    """Delete a key: its key file and the access tokens it got stop working at once."""
    with api.session(need_project=False) as s:
        answer = s.client.delete_service_account_key(iam_account, key_id)
        if api.format is Format.json:
            s.printer.document(answer)
        s.printer.note(f"Deleted key [{key_id}] for service account [{iam_account}].")


# -- IAM policies: projects and the organization -------------------------------------------------------------


def with_binding(policy: dict, member: str, role: str) -> dict:
    """The policy (etag kept) with `member` holding `role`."""
    changed = copy.deepcopy(policy)
    bindings = changed.setdefault("bindings", [])
    binding = next((b for b in bindings if b.get("role") == role and "condition" not in b), None)
    if binding is None:
        bindings.append({"role": role, "members": [member]})
    elif member not in binding.setdefault("members", []):
        binding["members"].append(member)
    return changed


def without_binding(policy: dict, member: str, role: str, where: str) -> dict:
    """The policy (etag kept) without `member` in `role`; an error if it was not there."""
    changed = copy.deepcopy(policy)
    bindings = changed.get("bindings", [])
    binding = next((b for b in bindings if b.get("role") == role and member in b.get("members", [])), None)
    if binding is None:
        raise ClientError(f"Policy binding with the member [{member}] and the role [{role}] not found on {where}.")
    binding["members"].remove(member)
    changed["bindings"] = [b for b in bindings if b.get("members")]
    return changed


def _check_member(member: str) -> None:
    if member not in ("allAuthenticatedUsers", "allUsers") and ":" not in member:
        raise typer.BadParameter(
            f"{member!r} names no kind of member: write serviceAccount:{member} (or allAuthenticatedUsers).",
            param_hint="'--member'",
        )


def update_policy(s: Session, resource: str, change: Callable[[dict], dict]) -> dict:
    """Read the policy, change it, write it back with the etag read; again from the read if it changed
    meanwhile (ABORTED), as gcloud does."""

    def read_change_write() -> dict:
        return s.client.set_iam_policy(resource, change(s.client.get_iam_policy(resource)))

    retrying = Retrying(
        stop=stop_after_attempt(POLICY_ATTEMPTS),
        wait=lambda state: random.uniform(0.05, 0.2) * 2 ** (state.attempt_number - 1),
        retry=retry_if_exception(lambda exc: isinstance(exc, ApiCallError) and exc.status == "ABORTED"),
        reraise=True,
    )
    return retrying(read_change_write)


def _describe(resource: str) -> str:
    kind, _, name = resource.partition("/")
    return f"{kind.rstrip('s')} [{name}]"


def _add_binding(resource: str, member: str, role: str, api: ApiOptions) -> None:
    _check_member(member)
    with api.session(need_project=False) as s:
        policy = update_policy(s, resource, lambda p: with_binding(p, member, role))
        s.printer.note(f"Updated IAM policy for {_describe(resource)}.")
        s.printer.document(policy)


def _remove_binding(resource: str, member: str, role: str, api: ApiOptions) -> None:
    _check_member(member)
    with api.session(need_project=False) as s:
        policy = update_policy(s, resource, lambda p: without_binding(p, member, role, _describe(resource)))
        s.printer.note(f"Updated IAM policy for {_describe(resource)}.")
        s.printer.document(policy)


def _get_policy(resource: str, api: ApiOptions) -> None:
    with api.session(need_project=False) as s:
        s.printer.document(s.client.get_iam_policy(resource))


def _organization(organization: str) -> str:
    return "organizations/" + organization.removeprefix("organizations/")


@projects_app.command("add-iam-policy-binding")
@api_command
def add_project_binding(
    project_id: ProjectId,
    member: Member,
    role: Role,
    *,
    api: ApiOptions,
):
    """Grant a role on a project to a member; prints the new policy."""
    _add_binding(f"projects/{project_id}", member, role, api)


@projects_app.command("remove-iam-policy-binding")
@api_command
def remove_project_binding(
    project_id: ProjectId,
    member: Member,
    role: Role,
    *,
    api: ApiOptions,
):
    """Take a role on a project away from a member; prints the new policy."""
    _remove_binding(f"projects/{project_id}", member, role, api)


@projects_app.command("get-iam-policy")
@api_command
def get_project_policy(project_id: ProjectId, *, api: ApiOptions):
    """Show a project's IAM policy (the organization's bindings hold there too)."""
    _get_policy(f"projects/{project_id}", api)


@organizations_app.command("add-iam-policy-binding")
@api_command
def add_organization_binding(
    member: Member,
    role: Role,
    organization: OrganizationId = DEFAULT_ORGANIZATION,
    *,
    api: ApiOptions,
):
    """Grant a role on every project to a member; prints the new policy."""
    _add_binding(_organization(organization), member, role, api)


@organizations_app.command("remove-iam-policy-binding")
@api_command
def remove_organization_binding(
    member: Member,
    role: Role,
    organization: OrganizationId = DEFAULT_ORGANIZATION,
    *,
    api: ApiOptions,
):
    """Take a role on every project away from a member; prints the new policy."""
    _remove_binding(_organization(organization), member, role, api)


@organizations_app.command("get-iam-policy")
@api_command
def get_organization_policy(
    organization: OrganizationId = DEFAULT_ORGANIZATION,
    *,
    api: ApiOptions,
):
    """Show the organization's IAM policy."""
    _get_policy(_organization(organization), api)


# -- the audit log, the console ----------------------------------------------------------------------------


def _audit_status(payload: dict) -> str:
    status = payload.get("status") or {}
    code = status.get("code", 0)
    return "OK" if not code else _RPC_STATUS.get(code, str(code))


@logs_app.command("audit")
@api_command
def audit(
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many entries (newest first).")] = 100,
    *,
    api: ApiOptions,
):
    """Show the audit log: who changed what, and every refused call, newest first. With --project: only that
    project's entries (without: every project's, which needs the permission on the organization)."""
    with api.session(need_project=False) as s:
        entries = list(s.client.iter_audit_logs(api.project, limit))
        if api.format is Format.json:
            s.printer.document(entries)
            return
        rows = []
        for entry in entries:
            payload = entry.get("protoPayload", {})
            rows.append(
                (
                    short_time(entry.get("timestamp")),
                    payload.get("authenticationInfo", {}).get("principalEmail") or "(unauthenticated)",
                    payload.get("methodName", ""),
                    payload.get("resourceName", ""),
                    _audit_status(payload),
                )
            )
        _print_table(s.printer, ("TIME (UTC)", "PRINCIPAL", "METHOD", "RESOURCE", "STATUS"), rows)


@console_app.command("link")
@api_command
def console_link(*, api: ApiOptions):
    """Print a link that signs the web console in as you (GOOGLE_APPLICATION_CREDENTIALS' account), once."""
    with api.session(need_project=False) as s:
        url = s.client.console_sign_in_link()
        if api.format is Format.json:
            s.printer.document({"url": url})
        else:
            typer.echo(url)
        s.printer.note("The link signs a browser in once; ask for another with `beamport console link`.")
