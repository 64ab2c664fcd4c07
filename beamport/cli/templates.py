"""`beamport templates ...` and `beamport flex-template run`: templates, with gcloud-like flags."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from beamport.cli.options import ApiOptions, api_command

app = typer.Typer(help="Describe and run classic templates; write flex template specs.", no_args_is_help=True)
flex_app = typer.Typer(help="Run flex templates.", no_args_is_help=True)

GcsLocation = Annotated[str, typer.Option("--gcs-location", help="The template file (a path, file:// or gs://).")]
Parameters = Annotated[str | None, typer.Option("--parameters", help="Runtime parameters: NAME=VALUE[,NAME=VALUE...].")]
JobName = Annotated[str, typer.Argument(help="The name of the job to start.", show_default=False)]
NumWorkers = Annotated[int | None, typer.Option(help="Workers the job starts with.")]
MaxWorkers = Annotated[int | None, typer.Option(help="Workers the job may scale to.")]


def _environment(num_workers: int | None, max_workers: int | None) -> dict:
    return {k: v for k, v in {"numWorkers": num_workers, "maxWorkers": max_workers}.items() if v}


def parse_parameters(text: str | None) -> dict[str, str]:
    """gcloud's --parameters: comma-separated NAME=VALUE pairs."""
    out = {}
    for pair in filter(None, (text or "").split(",")):
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="'--parameters'")
        out[name.strip()] = value
    return out


@app.command()
@api_command
def describe(
    gcs_location: GcsLocation,
    *,
    api: ApiOptions,
):
    """Show a template's metadata (its parameters)."""
    with api.session() as s:
        s.printer.document(s.client.get_template(s.project, s.region, gcs_location))


@app.command()
@api_command
def run(
    job_name: JobName,
    gcs_location: GcsLocation,
    parameters: Parameters = None,
    validate_only: Annotated[bool, typer.Option("--validate-only", help="Check, start nothing.")] = False,
    num_workers: NumWorkers = None,
    max_workers: MaxWorkers = None,
    *,
    api: ApiOptions,
):
    """Start a job from a classic template (`builtin://NAME` for Beamport's built-in templates)."""
    environment = _environment(num_workers, max_workers)
    body = {"jobName": job_name, "parameters": parse_parameters(parameters), "environment": environment}
    with api.session() as s:
        answer = s.client.launch_template(s.project, s.region, gcs_location, body, validate_only)
        if validate_only:
            s.printer.note("The template and its parameters are valid (nothing was started).")
        else:
            s.printer.job(answer["job"])


@app.command("build-flex")
def build_flex(
    spec_path: Annotated[Path, typer.Argument(help="Where to write the flex template spec file.")],
    py_path: Annotated[Path | None, typer.Option("--py-path", help="The template's Python program.")] = None,
    yaml_pipeline_file: Annotated[
        Path | None, typer.Option(help="A Beam YAML pipeline (a YAML template) instead of a program.")
    ] = None,
    metadata_file: Annotated[Path | None, typer.Option(help="The template's metadata (JSON).")] = None,
    requirements_file: Annotated[Path | None, typer.Option(help="The program's requirements.txt.")] = None,
    jar: Annotated[
        list[Path] | None,
        typer.Option("--jar", help="A jar of a Java template's class path (repeat it for each; gcloud's --jar)."),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option(
            "--env", help="NAME=VALUE for the launcher: FLEX_TEMPLATE_JAVA_MAIN_CLASS names a Java template's."
        ),
    ] = None,
    image: Annotated[str | None, typer.Option(help="The image name recorded in the spec (Beamport runs none).")] = None,
):
    """Write a flex template spec file, as `gcloud dataflow flex-template build` does."""
    if sum(map(bool, (py_path, yaml_pipeline_file, jar))) != 1:
        raise typer.BadParameter("give --py-path, --yaml-pipeline-file or --jar (one of them)")
    variables = dict(item.partition("=")[::2] for item in env or [])
    metadata = json.loads(metadata_file.read_text()) if metadata_file else {"name": spec_path.stem}
    launcher = "beamport/java-launcher" if jar else "beamport/python-launcher"
    spec: dict = {"image": image or launcher, "metadata": metadata, "defaultEnvironment": {}}
    if jar:
        main_class = variables.get("FLEX_TEMPLATE_JAVA_MAIN_CLASS")
        if not main_class:
            raise typer.BadParameter("a Java template needs --env FLEX_TEMPLATE_JAVA_MAIN_CLASS=CLASS")
        spec["sdkInfo"] = {"language": "JAVA"}
        spec["beamport"] = {"javaMainClass": main_class, "javaClassPath": [str(path.resolve()) for path in jar]}
    elif yaml_pipeline_file:
        spec["sdkInfo"] = {"language": "YAML"}
        spec["metadata"]["yamlDefinition"] = yaml_pipeline_file.read_text()
    else:
        assert py_path is not None  # one of the two, checked above
        spec["sdkInfo"] = {"language": "PYTHON"}
        spec["beamport"] = {"pythonFile": str(py_path.resolve())}
        if requirements_file:
            spec["beamport"]["requirementsFile"] = str(requirements_file.resolve())
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    typer.echo(f"Wrote the flex template spec {spec_path}.")


@flex_app.command("run")
@api_command
def flex_run(
    job_name: JobName,
    template_file_gcs_location: Annotated[
        str, typer.Option("--template-file-gcs-location", help="The flex template spec file.")
    ],
    parameters: Parameters = None,
    num_workers: NumWorkers = None,
    max_workers: MaxWorkers = None,
    *,
    api: ApiOptions,
):
    """Start a job from a flex template (its launcher runs on the server's host and submits the job)."""
    environment = _environment(num_workers, max_workers)
    body = {
        "launchParameter": {
            "jobName": job_name,
            "containerSpecGcsPath": template_file_gcs_location,
            "parameters": parse_parameters(parameters),
            "environment": environment,
        }
    }
    with api.session() as s:
        s.printer.job(s.client.launch_flex_template(s.project, s.region, body)["job"])
