"""TemplatesService (classic templates: create, launch, get) and FlexTemplatesService (launch) -> TemplateService,
FlexTemplateService, as http/templates.py calls them."""

from __future__ import annotations

from google.cloud import dataflow_v1beta3 as dataflow

from beamport.grpc.rpc import Method, body, location, project


def _fields_of_body(request) -> dict:
    """The request as the JSON body REST receives (every field but those its path carries)."""
    document = body(request)
    document.pop("projectId", None)
    document.pop("location", None)
    return document


def create_job_from_template(services, request, caller) -> dict:
    return services.templates.create(project(request), location(request), _fields_of_body(request))


def launch_template(services, request, caller) -> dict:
    return services.templates.launch(
        project(request),
        location(request),
        request.gcs_path or None,
        request.validate_only,
        body(request.launch_parameters),
        request.HasField("dynamic_template"),
    )


def get_template(services, request, caller) -> dict:
    view = dataflow.GetTemplateRequest.TemplateView(request.view).name
    return services.templates.get(project(request), location(request), request.gcs_path or None, view)


def launch_flex_template(services, request, caller) -> dict:
    # The launch waits for the template's launcher to submit its job, as the caller.
    return services.flex_templates.launch(project(request), location(request), _fields_of_body(request), caller)


TEMPLATES = "TemplatesService"
TEMPLATES_METHODS = [
    Method(
        "CreateJobFromTemplate",
        dataflow.CreateJobFromTemplateRequest,
        dataflow.Job,
        "dataflow.jobs.create",
        create_job_from_template,
        changes_state=True,
    ),
    Method(
        "LaunchTemplate",
        dataflow.LaunchTemplateRequest,
        dataflow.LaunchTemplateResponse,
        "dataflow.jobs.create",
        launch_template,
        changes_state=True,
    ),
    Method(
        "GetTemplate", dataflow.GetTemplateRequest, dataflow.GetTemplateResponse, "dataflow.templates.get", get_template
    ),
]

FLEX_TEMPLATES = "FlexTemplatesService"
FLEX_TEMPLATES_METHODS = [
    Method(
        "LaunchFlexTemplate",
        dataflow.LaunchFlexTemplateRequest,
        dataflow.LaunchFlexTemplateResponse,
        "dataflow.jobs.create",
        launch_flex_template,
        changes_state=True,
    ),
]
