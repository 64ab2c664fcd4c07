"""What every gRPC method shares, as http/protocol.py and http/auth.py are for REST: the request's bytes into a
protobuf message, the caller and its permission (the IAM service's decision, audited as REST audits), one service
call with the same JSON documents REST hands it, and its answer (or its ApiError) back as gRPC's.

A method here only names its request and response types, its permission, and how its request's fields become
the service call's arguments (the modules beside this one, one per Dataflow service).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from beamport import wire
from beamport.errors import ApiError, invalid_argument
from beamport.service import model
from beamport.service.iam import Principal

if TYPE_CHECKING:
    from beamport.service.execution_details import ExecutionDetails
    from beamport.service.flex_templates import FlexTemplateService
    from beamport.service.iam import IamService
    from beamport.service.jobs import JobService
    from beamport.service.snapshots import SnapshotService
    from beamport.service.templates import TemplateService

log = logging.getLogger(__name__)

PACKAGE = "google.dataflow.v1beta3"


@dataclass(frozen=True)
class Services:
    """The service layer, as the gRPC methods reach it (the same objects the REST app holds)."""

    jobs: JobService
    execution_details: ExecutionDetails
    snapshots: SnapshotService
    templates: TemplateService
    flex_templates: FlexTemplateService
    iam: IamService


# A method's translation: the services, the request (a protobuf message of the method's request type) and the
# caller, to the service's JSON answer.
Call = Callable[[Services, Any, Principal], dict]


@dataclass(frozen=True)
class Method:
    name: str  # the RPC's name in its service: CreateJob
    request: Any  # the proto-plus request type (dataflow.CreateJobRequest)
    response: Any  # the proto-plus response type
    permission: str  # as the REST route of the same method (http/app.py)
    call: Call
    changes_state: bool = False  # audited when it succeeds too (as REST audits every call but a GET)


class Malformed:
    """A request whose bytes are no message of its type: answered INVALID_ARGUMENT (gRPC itself would answer
    INTERNAL for a deserializer that fails)."""

    def __init__(self, why: str):
        self.why = why


def _deserializer(message_class) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_class.FromString(data)
        except DecodeError as exc:
            return Malformed(str(exc))

    return parse


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


# -- the request's fields, checked as REST checks its path and query parameters ---------------------------------


def project(request) -> str:
    return model.check_project(request.project_id)


def location(request) -> str:
    """The request's location; none means the default region, as REST's location-less twins do."""
    return model.check_location(request.location or model.DEFAULT_LOCATION)


def location_or_none(request) -> str | None:
    return model.check_location(request.location) if request.location else None


def job_id(request) -> str:
    return model.check_id("jobId", request.job_id)


def timestamp_us(request, field: str) -> int | None:
    """A google.protobuf.Timestamp field in microseconds since the epoch; None when unset."""
    return getattr(request, field).ToMicroseconds() if request.HasField(field) else None


def body(message: Message) -> dict:
    """A message as the JSON document REST receives for it (Google's JSON mapping: camelCase names, enums by
    name, int64 as strings); the service parses it as it parses a REST body."""
    return json_format.MessageToDict(message)


def _check_parameters(request: Message) -> None:
    """The request's own fields are what REST takes as path and query parameters: refused as REST refuses them
    (http/protocol.py), in the same words: a NUL character anywhere, an enum number its enum does not define.
    (Its message fields are REST's bodies: the service parses them, as it parses REST's.)"""
    for field, value in request.ListFields():
        # types-protobuf's FieldDescriptor lacks json_name (set by its constructor).
        name = field.json_name  # type: ignore[attr-defined]
        if field.type == FieldDescriptor.TYPE_STRING and not field.is_repeated and "\x00" in value:
            raise invalid_argument(f"Invalid value at '{name}': NUL characters are not allowed.")
        if field.type == FieldDescriptor.TYPE_ENUM and not field.is_repeated:
            wire.parse_enum(str(value), field.enum_type, name)


# -- the caller -------------------------------------------------------------------------------------------------


def _metadata(context: grpc.ServicerContext, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else None
    return None


def _peer_ip(context: grpc.ServicerContext) -> str:
    """The caller's address from gRPC's peer string: ipv4:127.0.0.1:5000, ipv6:[::1]:5000."""
    kind, _, address = (context.peer() or "").partition(":")
    if kind == "ipv6":
        return address.rpartition("]")[0].lstrip("[")
    return address.rpartition(":")[0] if kind == "ipv4" else ""


def _resource(request) -> str:
    """What the audit log names: the resource the request names, in Google's form (REST logs the URL path)."""
    fields = request.DESCRIPTOR.fields_by_name
    parts = [f"projects/{request.project_id}"]
    if "location" in fields and request.location:
        parts.append(f"locations/{request.location}")
    if "job_id" in fields and request.job_id:
        parts.append(f"jobs/{request.job_id}")
    if "snapshot_id" in fields and request.snapshot_id:
        parts.append(f"snapshots/{request.snapshot_id}")
    return "/".join(parts)


class _Handler:
    """One method's unary handler: authenticate, authorize, translate, call, answer; audit as REST does."""

    def __init__(self, service: str, method: Method, services: Services):
        self.path = f"/{PACKAGE}.{service}/{method.name}"
        self.method = method
        self.services = services
        self.response_class = method.response.pb()

    def __call__(self, request, context: grpc.ServicerContext):
        try:
            return self._answer(request, context)
        except ApiError as error:  # from the audit log itself (the database gone: UNAVAILABLE), as REST answers it
            context.abort(grpc.StatusCode[error.status], error.message)

    def _answer(self, request, context: grpc.ServicerContext):
        iam = self.services.iam
        method = self.method
        if isinstance(request, Malformed):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid request: {request.why}")
        principal = None
        try:
            header = _metadata(context, "authorization")
            principal = iam.cached(header)
            if principal is None and (header or not iam.enabled):
                principal = iam.authenticate(header)
            iam.authorize(principal, method.permission, request.project_id, getattr(request, "job_id", None) or None)
        except ApiError as error:
            self._audit(context, request, principal, error.status, error.message)
            context.abort(grpc.StatusCode[error.status], error.message)
        assert principal is not None  # authorize() refuses a call from no one
        try:
            _check_parameters(request)
            answer = method.call(self.services, request, principal)
            response = json_format.ParseDict(answer, self.response_class(), ignore_unknown_fields=True)
        except ApiError as error:
            if method.changes_state:
                self._audit(context, request, principal, error.status, error.message)
            context.abort(grpc.StatusCode[error.status], error.message)
        except Exception:
            log.exception("internal error answering %s", self.path)
            if method.changes_state:
                self._audit(context, request, principal, "INTERNAL", "Internal error encountered.")
            context.abort(grpc.StatusCode.INTERNAL, "Internal error encountered.")
        if method.changes_state:
            self._audit(context, request, principal, "OK", "")
        return response

    def _audit(self, context, request, principal: Principal | None, status: str, message: str) -> None:
        self.services.iam.audit(
            principal,
            self.method.permission,
            request.project_id,
            _resource(request),
            status,
            message,
            _peer_ip(context),
        )


def handlers(service: str, methods: list[Method], services: Services) -> dict[str, grpc.RpcMethodHandler]:
    """The service's methods as gRPC method handlers, for grpc.Server.add_registered_method_handlers."""
    return {
        method.name: grpc.unary_unary_rpc_method_handler(
            _Handler(service, method, services),
            request_deserializer=_deserializer(method.request.pb()),
            response_serializer=_serialize,
        )
        for method in methods
    }
