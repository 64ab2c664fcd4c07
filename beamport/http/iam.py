"""Identity and access over HTTP, in the shapes of Google's own APIs: IAM v1 (service accounts and keys),
Resource Manager v1 (getIamPolicy / setIamPolicy), the OAuth 2.0 token endpoint a key file's token_uri names,
and Beamport's own audit log and console sign-in. Everything here only translates to the IAM service."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from beamport.errors import ApiError, invalid_argument
from beamport.http.auth import principal_of, session_cookie
from beamport.http.protocol import JSON_TYPE, api, call, error_response, int_param, project_param, read_json
from beamport.service.iam import ORGANIZATION, OAuthError

_EMAIL_RE = re.compile(r"[a-z0-9][-a-z0-9.]{0,62}@[a-z0-9][-a-z0-9.]{0,200}\Z")
_KEY_ID_RE = re.compile(r"[0-9a-f]{40}\Z")
MAX_FORM_BYTES = 64 * 1024


def _iam(request: Request):
    return request.app.state.iam


def _project_or_any(request: Request) -> str:
    return "-" if request.path_params["projectId"] == "-" else project_param(request)


def _email(request: Request) -> str:
    email = request.path_params["email"].lower()
    if not _EMAIL_RE.match(email):
        raise invalid_argument(f"Invalid service account email {email!r}")
    return email


def account_project(request: Request) -> str:
    """What a service-account route is authorised on: the account's own project (`projects/-/...` names it by
    its email alone); Beamport's own accounts belong to the organization."""
    return _iam(request).account_scope(_project_or_any(request), _email(request))


def organization(request: Request) -> str:
    """Organization routes, and what spans every project, are authorised on the organization."""
    return ORGANIZATION


def root_url(request: Request) -> str:
    """This server's root as the caller reached it: the token_uri of the keys it is handed."""
    return f"{request.url.scheme}://{request.headers.get('host') or request.url.netloc}"


@api
async def create_account(request: Request) -> dict:
    project = project_param(request)
    return await call(_iam(request).create_account, project, await read_json(request))


@api
async def list_accounts(request: Request) -> dict:
    return await call(_iam(request).list_accounts, project_param(request))


@api
async def get_account(request: Request) -> dict:
    return await call(_iam(request).get_account, _project_or_any(request), _email(request))


@api
async def delete_account(request: Request) -> dict:
    return await call(_iam(request).delete_account, _project_or_any(request), _email(request))


@api
async def create_key(request: Request) -> dict:
    project, email = _project_or_any(request), _email(request)
    await read_json(request)  # privateKeyType / keyAlgorithm: Google's defaults are the only kind made
    return await call(_iam(request).create_key, project, email, root_url(request))


@api
async def list_keys(request: Request) -> dict:
    return await call(_iam(request).list_keys, _project_or_any(request), _email(request))


@api
async def delete_key(request: Request) -> dict:
    key_id = request.path_params["keyId"]
    if not _KEY_ID_RE.match(key_id):
        raise invalid_argument(f"Invalid key id {key_id!r}")
    return await call(_iam(request).delete_key, _project_or_any(request), _email(request), key_id)


@api
async def get_project_policy(request: Request) -> dict:
    project = project_param(request)
    await read_json(request)
    return await call(_iam(request).get_policy, project)


@api
async def set_project_policy(request: Request) -> dict:
    project = project_param(request)
    return await call(_iam(request).set_policy, project, await read_json(request))


@api
async def get_organization_policy(request: Request) -> dict:
    _organization(request)
    await read_json(request)
    return await call(_iam(request).get_policy, ORGANIZATION)


@api
async def set_organization_policy(request: Request) -> dict:
    _organization(request)
    return await call(_iam(request).set_policy, ORGANIZATION, await read_json(request))


def _organization(request: Request) -> None:
    if request.path_params["organizationId"] != ORGANIZATION.split("/")[1]:
        raise invalid_argument(f"This server has one organization, {ORGANIZATION}.")


@api
async def list_project_audit(request: Request) -> dict:
    project = project_param(request)
    q = request.query_params
    return await call(_iam(request).list_audit, project, int_param(request, "pageSize"), q.get("pageToken"))


@api
async def list_all_audit(request: Request) -> dict:
    q = request.query_params
    return await call(_iam(request).list_audit, None, int_param(request, "pageSize"), q.get("pageToken"))


async def token(request: Request) -> Response:
    """The OAuth 2.0 token endpoint: grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT."""
    form = await _read_form(request)
    if form is None:
        return _oauth_error(OAuthError("invalid_request", "The request is too large."))
    try:
        answer = await call(_iam(request).grant_token, form, request.headers.get("host", ""))
    except OAuthError as error:
        return _oauth_error(error)
    return Response(orjson.dumps(answer), media_type=JSON_TYPE, headers={"Cache-Control": "no-store"})


async def revoke(request: Request) -> Response:
    """RFC 7009 token revocation (Google's revoke endpoint takes the token alone)."""
    form = await _read_form(request) or {}
    await call(_iam(request).revoke, form.get("token") or request.query_params.get("token", ""))
    return Response(b"{}", media_type=JSON_TYPE)


async def _read_form(request: Request) -> dict | None:
    """A form body (application/x-www-form-urlencoded), None if it is over MAX_FORM_BYTES."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return dict(parse_qsl(body.decode("utf-8", "replace")))


def _oauth_error(error: OAuthError) -> Response:
    body = {"error": error.error, "error_description": error.description}
    return Response(orjson.dumps(body), status_code=400, media_type=JSON_TYPE, headers={"Cache-Control": "no-store"})


# -- the console's session ---------------------------------------------------------------------------


async def sign_in(request: Request) -> Response:
    """The one-time link: a console session for its principal, in an HttpOnly, SameSite=Strict cookie."""
    session = _iam(request).sign_in(request.query_params.get("code", ""))
    if session is None:
        return Response(
            "This sign-in link was used already or has expired. Ask for another with `beamport console link`.",
            status_code=401,
            media_type="text/plain; charset=utf-8",
        )
    session_id, _principal = session
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        session_cookie(request),
        session_id,
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
    )
    return response


@api
async def whoami(request: Request) -> dict:
    """Who the console (or any caller) is signed in as, and the CSRF token its state changes carry."""
    principal = await principal_of(request)
    iam = _iam(request)
    if principal is None:
        raise ApiError(
            "UNAUTHENTICATED",
            "Not signed in: open the link `beamport serve` printed, or one from `beamport console link`.",
        )
    answer = {"principal": principal.email, "authentication": "on" if iam.enabled else "off"}
    if principal.csrf:
        answer["csrfToken"] = principal.csrf
    return answer


async def sign_out(request: Request) -> Response:
    """End the console's session (a state change: it needs the session's CSRF token) and drop its cookie."""
    try:
        principal = await principal_of(request)
    except ApiError as error:
        return error_response(error)
    name = session_cookie(request)
    if principal is not None and name in request.cookies:
        _iam(request).sign_out(request.cookies[name])
    response = Response(b"{}", media_type=JSON_TYPE)
    response.delete_cookie(name, path="/", httponly=True, samesite="strict")
    return response


@api
async def sign_in_link(request: Request) -> dict:
    """A one-time console link for the caller (`beamport console link`)."""
    principal = await principal_of(request)
    if principal is None:
        raise ApiError("UNAUTHENTICATED", "Credentials are needed to sign the console in.")
    code = _iam(request).sign_in_code(principal)
    return {"url": f"{root_url(request)}/console/signin?code={code}"}
