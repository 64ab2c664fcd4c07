"""Path escapes (issue 14): every input that names a file, tried as an attacker would.

First the policy itself (beamport/files.py, no server): `..`, wildcards followed by `..`, wildcards in
directories, URL-encoding, file:// with a host, symlinks, NUL bytes, relative paths, Beamport's own files; and
the check where a file is opened, with a directory swapped for a link between the check and the open.

Then against `beamport serve` whose only allowed roots are its data dir and its start directory: templates,
SQL tables and queries, jobs.create, flex templates; each escape a clear 4xx, and nothing read, written or
stored outside. Last, jobs that wait while a directory they name is swapped for a link leading outside: the
worker refuses when it opens the file (FAILED, naming the path).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Api, Server
from test_running_jobs import read_output, texts, wait_state

from beamport.errors import ApiError
from beamport.files import POLICY_VARIABLE, FilePolicy

REGION = "us-central1"


# -- the policy ---------------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path):
    """root (allowed) with in/a.csv, a link to outside, a link to an outside file among in/'s files, a literal
    `*` directory and Beamport's own key; outside (not allowed) with a secret."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "in").mkdir(parents=True)
    (root / "sub").mkdir()
    (root / "*").mkdir()  # what an earlier (refused since) output of ROOT/*/x would have made
    outside.mkdir()
    (root / "in" / "a.csv").write_text("x\n1\n")
    (root / "keys.json").write_text("{}")
    (outside / "secret.txt").write_text("outside secret\n")
    (root / "link").symlink_to(outside)
    (root / "in" / "evil.csv").symlink_to(outside / "secret.txt")
    return root, outside, FilePolicy([root], [root / "keys.json"])


def refused(call, location, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(location, *args, **kwargs)
    return caught.value


def test_read_patterns_stay_in_their_directory(tree):
    root, outside, policy = tree
    invalid = [
        f"{root}/*/../../outside/secret.txt",  # `..` after a wildcard (the literal `*` directory exists)
        f"{root}/*/../in/a.csv",  # even when it would lead back inside
        f"{root}/*/a.csv",  # a wildcard in a directory
        f"{root}/i?/a.csv",
        f"{root}/[i]n/a.csv",
        f"{root}/in/**",  # recursive
        f"{root}/in/a.csv\x00.txt",  # NUL
        f"file://{root}/in/a.csv%00",  # encoded NUL
        f"file://otherhost{root}/in/a.csv",  # another host
        f"file://[::1{root}/in/a.csv",  # not a URL
        f"file://{root}/in/a.csv?x=1",
        "in/a.csv",  # relative
        "../root/in/a.csv",
        "s3://bucket/in/a.csv",
        "",
    ]
    for location in invalid:
        error = refused(policy.check_pattern, location)
        assert error.status == "INVALID_ARGUMENT", (location, error)
        assert error.code == 400
    denied = [
        f"{root}/../outside/secret.txt",
        f"{root}/../outside/*.txt",
        f"{root}/link/secret.txt",  # a link inside a root that leads outside
        f"{root}/link/*.txt",
        f"{root}/in/*.csv",  # one of its matches (evil.csv) leads outside
        f"{root}/in/evil.csv",
        f"{root}/in/e*",
        f"file://{root}/in%2F..%2F..%2Foutside/secret.txt",  # %2F decoded: the `..` are real
        f"file://{root}/%2e%2e/outside/secret.txt",
        f"file://localhost{root}/%2E%2E/outside/*.txt",
        f"{root}/keys.json",  # Beamport's own
        f"{root}/keys*",
        f"{root}/sub/../keys.json",
        "/etc/passwd",
    ]
    for location in denied:
        error = refused(policy.check_pattern, location)
        assert error.status == "PERMISSION_DENIED" and error.code == 403, (location, error)
        shown = location.removeprefix("file://localhost").removeprefix("file://")
        assert shown in error.message or location in error.message, (location, error.message)
        if location.startswith(str(root)) and "keys" not in location:
            assert "outside the allowed roots" in error.message
    # What is allowed comes back canonical: the real directory, then the file name (or its wildcards).
    assert policy.check_pattern(f"{root}/in/a*.csv") == f"{root.resolve()}/in/a*.csv"
    assert policy.check_pattern(f"{root}/sub/../in/a.csv") == f"{root.resolve()}/in/a.csv"
    assert policy.check_pattern(f"file://{root}/in/a%2Ecsv") == f"{root.resolve()}/in/a.csv"
    assert policy.check_pattern(f"file://localhost{root}/in/[a]*.csv") == f"{root.resolve()}/in/[a]*.csv"
    # Percent signs in a plain path are characters, not escapes: this names a directory called %2e%2e.
    assert policy.check_pattern(f"{root}/%2e%2e/x.csv") == f"{root.resolve()}/%2e%2e/x.csv"
    assert policy.match(f"{root}/in/a*") == [f"{root.resolve()}/in/a.csv"]
    assert policy.match(f"{root}/in/none*") == [] and policy.match(f"{root}/in/none.csv") == []
    assert refused(policy.match, f"{root}/in/*").status == "PERMISSION_DENIED"


def test_outputs_are_paths_checked_as_the_directory_they_write_into(tree):
    root, outside, policy = tree
    invalid = [
        f"{root}/*/x",  # a pattern: refused before anything is created
        f"{root}/*/../../outside/f",
        f"{root}/out/counts-*",
        f"{root}/out/[ab]",
        f"{root}/out/..",  # not the name of what is written
        f"{root}/out/.",
        f"{root}/out\x00/f",
        f"file://evil{root}/out/f",
        "out/f",
        "gs://bucket/out/*",
    ]
    for location in invalid:
        error = refused(policy.check_output, location)
        assert error.status == "INVALID_ARGUMENT", (location, error)
    denied = [
        f"{root}/../outside/f",
        f"{root}/link/f",
        f"{root}/in/evil.csv",  # the name itself leads outside
        f"{root}/new/../../outside/f",  # `..` through a directory that does not exist yet
        f"file://{root}/out%2F..%2F..%2Foutside/f",
        str(root),  # a prefix ROOT writes ROOT-00000-of-00001 next to the root, outside it
        f"{root}/keys.json",
        f"{root}/x/../keys.json",
        "/tmp/beamport-paths-test-outside/f",
    ]
    for location in denied:
        error = refused(policy.check_output, location)
        assert error.status == "PERMISSION_DENIED", (location, error)
    for location in [f"{root}/link", f"{root}/../outside", f"{root}/link/sub"]:
        assert refused(policy.check_output, location, folder=True).status == "PERMISSION_DENIED"
    real = root.resolve()
    assert policy.check_output(f"{root}/out/counts") == f"{real}/out/counts"
    assert policy.check_output(f"{root}/sub/../out/counts") == f"{real}/out/counts"
    assert policy.check_output(f"{root}/out/") == f"{real}/out/"
    assert policy.check_output(str(root), folder=True) == str(real)
    assert policy.check_output(f"{root}/in/..", folder=True) == str(real)
    assert not (root / "out").exists()  # checking creates nothing


def test_a_file_is_checked_as_it_is_opened(tree, monkeypatch):
    """A directory swapped for a link between the check and the open: the file actually opened is checked."""
    root, outside, policy = tree
    (root / "d").mkdir()
    (root / "d" / "secret.txt").write_text("inside\n")
    (outside / "d").mkdir()
    (outside / "d" / "secret.txt").write_text("outside secret\n")
    assert policy.read_bytes(str(root / "d" / "secret.txt")) == b"inside\n"

    check = FilePolicy.check

    def check_then_swap(self, location):
        checked = check(self, location)
        (root / "d").rename(root / "d-before")
        (root / "d").symlink_to(outside / "d")
        return checked

    monkeypatch.setattr(FilePolicy, "check", check_then_swap)
    error = refused(policy.open_read, str(root / "d" / "secret.txt"))
    assert error.status == "PERMISSION_DENIED"
    assert str(root / "d" / "secret.txt") in error.message and str(outside / "d" / "secret.txt") in error.message
    monkeypatch.undo()

    # Writing: the directory is checked as opened, then the file created in it.
    (root / "d").unlink()
    (root / "d-before").rename(root / "d")
    check_output = FilePolicy.check_output

    def check_output_then_swap(self, location, folder=False):
        checked = check_output(self, location, folder)
        (root / "d").rename(root / "d-before")
        (root / "d").symlink_to(outside / "d")
        return checked

    monkeypatch.setattr(FilePolicy, "check_output", check_output_then_swap)
    error = refused(policy.open_write, str(root / "d" / "new.txt"))
    assert error.status == "PERMISSION_DENIED" and str(root / "d" / "new.txt") in error.message
    assert sorted(p.name for p in (outside / "d").iterdir()) == ["secret.txt"]
    monkeypatch.undo()

    # Without a swap: written, and not through a link at the end.
    with policy.open_write(str(root / "new" / "dir" / "f.txt")) as handle:
        handle.write(b"ok")
    assert (root / "new" / "dir" / "f.txt").read_bytes() == b"ok"
    (root / "out-link").symlink_to(outside / "planted")
    assert refused(policy.open_write, str(root / "out-link")).status == "PERMISSION_DENIED"
    assert not (outside / "planted").exists()
    # Not a regular file, or a directory: refused as such (a FIFO would block a reader forever).
    os.mkfifo(root / "fifo")
    assert refused(policy.open_read, str(root / "fifo")).status == "INVALID_ARGUMENT"
    assert refused(policy.read_bytes, str(root / "in")).status == "INVALID_ARGUMENT"


def test_the_policy_travels_to_the_pipeline_as_it_is(tree):
    """Staging exports the worker's policy to its process's environment, where the built-in templates (in that
    process or in SDK harness processes it starts) find it."""
    root, _, policy = tree
    environ: dict = {}
    policy.export(environ)
    again = FilePolicy.from_json(environ[POLICY_VARIABLE])
    assert again.roots == policy.roots and again.private == policy.private


def test_sql_engine_opens_only_the_tables_files(tree):
    """DuckDB's own table functions cannot read other files: a query runs with the tables' files only."""
    root, outside, _ = tree
    from beamport.builtin_templates import sql_engine

    tables = {"t": {"path": [str(root / "in" / "a.csv")], "format": "csv"}}
    assert list(sql_engine.run("SELECT x FROM t", tables)) == [{"x": 1}]
    for query in [
        f"SELECT * FROM t, read_text('{outside}/secret.txt')",
        f"SELECT * FROM read_csv_auto('{outside}/secret.txt')",
        f"SELECT * FROM read_blob('{outside}/*')",
    ]:
        with pytest.raises(Exception, match="disabled by configuration"):
            list(sql_engine.run(query, tables))
    with pytest.raises(ValueError, match="cannot be read"):
        sql_engine.describe([str(root / "*")], "csv")


# -- against a server ---------------------------------------------------------------------------------


class Site:
    def __init__(self, server: Server, start: Path, outside: Path):
        self.server = server
        self.start = start  # the start directory: an allowed root (the data dir is start/data)
        self.outside = outside

    def snapshot(self) -> list[str]:
        """Every path under the test's directory, outside the data dir (which the server itself writes)."""
        base = self.start.parent
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if "data" not in p.relative_to(base).parts[:2])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A server whose only roots are its data dir and its start directory, with no workers: its jobs wait."""
    base = tmp_path_factory.mktemp("paths")
    start, outside = base / "start", base / "outside"
    start.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("outside words\n")
    (outside / "x.csv").write_text("a,b\nsecret,1\n")
    srv = Server(start / "data", extra_args=("--workers", "0")).start()
    yield Site(srv, start, outside)
    srv.stop()


def error_of(response, code: int, status: str) -> str:
    assert response.status_code == code, response.text
    assert response.json()["error"]["status"] == status, response.text
    return response.json()["error"]["message"]


def test_template_paths_that_escape_are_refused_and_create_nothing(site, project):
    api = Api(site.server.url, project)
    root, outside = site.start / "tpl", site.outside
    root.mkdir()
    (root / "words.txt").write_text("inside words\n")
    (root / "*").mkdir()  # as an earlier output of ROOT/*/x would have made
    (root / "link").symlink_to(outside)
    (root / "in").mkdir()
    (root / "in" / "a.txt").write_text("a\n")
    (root / "in" / "b.txt").symlink_to(outside / "secret.txt")
    launch = f"/v1b3/projects/{project}/locations/{REGION}/templates:launch"
    words = str(root / "words.txt")
    (outside / "tpl").write_text("{}")
    before = site.snapshot()

    def launched(parameters, **extra):
        body = {"jobName": "wc", "parameters": parameters, **extra}
        return api.client.post(launch, params={"gcsPath": "builtin://Word_Count"}, json=body)

    cases = [
        ({"inputFile": words, "output": f"{root}/*/x"}, 400, "INVALID_ARGUMENT"),
        ({"inputFile": words, "output": f"{root}/*/../../../outside/f"}, 400, "INVALID_ARGUMENT"),
        ({"inputFile": words, "output": f"{root}/../../outside/f"}, 403, "PERMISSION_DENIED"),
        ({"inputFile": words, "output": f"{root}/link/f"}, 403, "PERMISSION_DENIED"),
        ({"inputFile": words, "output": f"file://{root}/x%2F..%2F..%2F..%2Foutside/f"}, 403, "PERMISSION_DENIED"),
        ({"inputFile": words, "output": f"file://elsewhere{root}/f"}, 400, "INVALID_ARGUMENT"),
        ({"inputFile": words, "output": f"{root}/f\x00"}, 400, "INVALID_ARGUMENT"),
        ({"inputFile": words, "output": "tpl/f"}, 400, "INVALID_ARGUMENT"),
        ({"inputFile": f"{root}/*/../../../outside/secret.txt", "output": f"{root}/o"}, 400, "INVALID_ARGUMENT"),
        ({"inputFile": f"{root}/*/words.txt", "output": f"{root}/o"}, 400, "INVALID_ARGUMENT"),
        ({"inputFile": f"{root}/link/secret.txt", "output": f"{root}/o"}, 403, "PERMISSION_DENIED"),
        ({"inputFile": f"{root}/in/*.txt", "output": f"{root}/o"}, 403, "PERMISSION_DENIED"),
        (
            {"inputFile": f"file://{root}/%2e%2e/%2e%2e/outside/secret.txt", "output": f"{root}/o"},
            403,
            "PERMISSION_DENIED",
        ),
        ({"inputFile": f"{site.start}/data/admin-key.json", "output": f"{root}/o"}, 403, "PERMISSION_DENIED"),
    ]
    for parameters, code, status in cases:
        error_of(launched(parameters), code, status)
    # Nor through the environment: additionalPipelineOptions may not replace a checked parameter.
    sneaky = launched(
        {"inputFile": words, "output": f"{root}/o"}, environment={"additionalPipelineOptions": [f"output={outside}/f"]}
    )
    assert "'output'" in error_of(sneaky, 400, "INVALID_ARGUMENT")
    sneaky = launched({"inputFile": words, "output": f"{root}/o"}, environment={"tempLocation": f"{outside}/tmp"})
    error_of(sneaky, 403, "PERMISSION_DENIED")

    # templates.get / launch: the template file itself.
    get = f"/v1b3/projects/{project}/locations/{REGION}/templates:get"
    for gcs_path, code, status in [
        (f"{root}/../../outside/tpl", 403, "PERMISSION_DENIED"),
        (f"{root}/link/tpl", 403, "PERMISSION_DENIED"),
        (f"file://host{root}/tpl", 400, "INVALID_ARGUMENT"),
        (f"{root}/tpl\x00", 400, "INVALID_ARGUMENT"),
        ("tpl", 400, "INVALID_ARGUMENT"),
    ]:
        error_of(api.client.get(get, params={"gcsPath": gcs_path}), code, status)
        error_of(api.client.post(launch, params={"gcsPath": gcs_path}, json={"jobName": "x"}), code, status)

    assert api.all_jobs() == []
    assert site.snapshot() == before  # no `*` directory, no beam-temp-*, nothing outside
    assert not list(site.start.parent.rglob("beam-temp-*"))

    # What is allowed is launched with the canonical paths: what was checked is what the job reads.
    ok = launched({"inputFile": f"file://{root}/in/../words.txt", "output": f"{root}/sub/../out/counts"})
    assert ok.status_code == 200, ok.text
    job = api.get(ok.json()["job"]["id"], view="JOB_VIEW_ALL").json()
    options = job["environment"]["sdkPipelineOptions"]["options"]
    real = root.resolve()
    assert options["inputFile"] == f"{real}/words.txt" and options["output"] == f"{real}/out/counts"


def test_sql_paths_that_escape_are_refused(site, project):
    api = Api(site.server.url, project)
    root, outside = site.start / "sql", site.outside
    (root / "files").mkdir(parents=True)
    (root / "*").mkdir()
    (root / "files" / "sales-1.csv").write_text("region,amount\nnorth,3\n")
    (root / "link").symlink_to(outside)
    tables = f"/beamport/v1/projects/{project}/sqlTables"
    before = site.snapshot()

    cases = [
        (f"{root}/*/../../../etc/passwd", 400, "INVALID_ARGUMENT"),
        (f"{root}/*/../../../outside/x.csv", 400, "INVALID_ARGUMENT"),
        (f"{root}/*/sales-1.csv", 400, "INVALID_ARGUMENT"),
        (f"{root}/files/**", 400, "INVALID_ARGUMENT"),
        ("/etc/passwd", 403, "PERMISSION_DENIED"),
        (f"{root}/../../outside/x.csv", 403, "PERMISSION_DENIED"),
        (f"{root}/link/x.csv", 403, "PERMISSION_DENIED"),
        (f"{root}/link/*.csv", 403, "PERMISSION_DENIED"),
        (f"file://{root}/%2e%2e/%2e%2e/outside/x.csv", 403, "PERMISSION_DENIED"),
        (f"file://{root}/files%2F..%2F..%2F..%2Foutside/x.csv", 403, "PERMISSION_DENIED"),
        (f"file://otherhost{root}/files/sales-1.csv", 400, "INVALID_ARGUMENT"),
        (f"{root}/files/sales-1.csv\x00", 400, "INVALID_ARGUMENT"),
        ("files/sales-1.csv", 400, "INVALID_ARGUMENT"),
        (f"{site.start}/data/beamport.db", 403, "PERMISSION_DENIED"),
        (f"{site.start}/data/beamport.d*", 403, "PERMISSION_DENIED"),
    ]
    for path, code, status in cases:
        response = api.client.post(tables, json={"name": "t", "path": path, "format": "csv"})
        message = error_of(response, code, status)
        assert "secret" not in message  # the refused file's content never shows
    assert api.client.get(tables).json() == {"tables": []}

    # A link among a pattern's matches, added after the table: the query is refused (the files are matched
    # again, through the policy, at each use).
    added = api.client.post(tables, json={"name": "sales", "path": f"{root}/files/sales-*.csv", "format": "csv"})
    assert added.status_code == 200, added.text
    assert added.json()["path"] == f"{root.resolve()}/files/sales-*.csv"
    query = f"/beamport/v1/projects/{project}/locations/{REGION}/sql:query"
    good = {"query": "SELECT region FROM sales", "jobName": "q"}
    for output, code, status in [
        (f"{root}/*/../../../outside/x", 400, "INVALID_ARGUMENT"),
        (f"{root}/*/x", 400, "INVALID_ARGUMENT"),
        (f"{root}/../../outside/x", 403, "PERMISSION_DENIED"),
        (f"{root}/link/x", 403, "PERMISSION_DENIED"),
        (f"{root}/x\x00", 400, "INVALID_ARGUMENT"),
    ]:
        error_of(api.client.post(query, json={**good, "output": output}), code, status)
    # DuckDB's own functions cannot reach other files.
    sneaky_queries = [
        f"SELECT * FROM sales, read_text('{outside}/secret.txt')",
        f"SELECT region FROM sales WHERE region IN (SELECT a FROM read_csv_auto('{outside}/x.csv'))",
    ]
    for sneaky in sneaky_queries:
        message = error_of(
            api.client.post(query, json={**good, "query": sneaky, "output": f"{root}/o"}), 400, "INVALID_ARGUMENT"
        )
        assert "outside words" not in message and "secret,1" not in message
    (root / "files" / "sales-2.csv").symlink_to(outside / "x.csv")
    error_of(api.client.post(query, json={**good, "output": f"{root}/o"}), 403, "PERMISSION_DENIED")
    validate = f"/v1b3/projects/{project}/locations/{REGION}/sql:validate"
    error_of(api.client.get(validate, params={"query": "SELECT region FROM sales"}), 403, "PERMISSION_DENIED")
    (root / "files" / "sales-2.csv").unlink()
    assert api.all_jobs() == []
    assert site.snapshot() == before


def test_deeply_nested_queries_are_invalid_arguments(site, project):
    api = Api(site.server.url, project)
    validate = f"/v1b3/projects/{project}/locations/{REGION}/sql:validate"
    query = f"/beamport/v1/projects/{project}/locations/{REGION}/sql:query"
    deep = [
        "SELECT " + "(" * 500 + "1" + ")" * 500,
        "SELECT " + "[" * 500 + "1" + "]" * 500,
        "SELECT " + "NOT " * 3000 + "TRUE",
        "SELECT " + "- " * 3000 + "1",
        "SELECT 1 FROM " + "(SELECT 1 FROM " * 300 + "t" + ")" * 300,
    ]
    for text in deep:
        assert "deep" in error_of(api.client.get(validate, params={"query": text}), 400, "INVALID_ARGUMENT")
        body = {"query": text, "jobName": "deep", "output": str(site.start / "deep")}
        assert "deep" in error_of(api.client.post(query, json=body), 400, "INVALID_ARGUMENT")
    # Nesting real queries use still parses; parentheses in strings and comments do not count.
    fine = "SELECT " + "(" * 30 + "1" + ")" * 30 + ", '" + "(" * 500 + "' -- " + "(" * 500
    assert api.client.get(validate, params={"query": fine}).json() == {"queryInfo": {}}


def test_job_files_that_escape_are_refused(site, project):
    api = Api(site.server.url, project)
    root, outside = site.start / "jobs", site.outside
    root.mkdir()
    (root / "link").symlink_to(outside)
    (outside / "pipeline.pb").write_bytes(b"")
    jobs = f"/v1b3/projects/{project}/locations/{REGION}/jobs"

    def created(options=None, packages=None, **environment):
        body = {
            "name": "j",
            "type": "JOB_TYPE_BATCH",
            "environment": {
                "sdkPipelineOptions": {"options": options or {}},
                **environment,
                "workerPools": [{"packages": packages or []}],
            },
        }
        return api.client.post(jobs, json=body)

    cases = [
        ({"temp_location": f"{root}/*/x"}, None, 400, "INVALID_ARGUMENT"),
        ({"temp_location": f"{root}/../../outside"}, None, 403, "PERMISSION_DENIED"),
        ({"staging_location": f"{root}/link"}, None, 403, "PERMISSION_DENIED"),
        # Beam Java's spellings (its DataflowRunner's job options)
        ({"tempLocation": f"{root}/../../outside"}, None, 403, "PERMISSION_DENIED"),
        ({"stagingLocation": f"{root}/link"}, None, 403, "PERMISSION_DENIED"),
        ({"gcpTempLocation": f"file://{root}/%2e%2e/%2e%2e/outside"}, None, 403, "PERMISSION_DENIED"),
        ({"staging_location": f"file://{root}/%2e%2e/%2e%2e/outside"}, None, 403, "PERMISSION_DENIED"),
        ({"temp_location": f"file://otherhost{root}"}, None, 400, "INVALID_ARGUMENT"),
        ({"temp_location": f"{root}\x00"}, None, 400, "INVALID_ARGUMENT"),
        ({"temp_location": "jobs/tmp"}, None, 400, "INVALID_ARGUMENT"),
        ({"pipelineUrl": f"{root}/link/pipeline.pb"}, None, 403, "PERMISSION_DENIED"),
        ({"pipelineUrl": f"file://{root}/x%2F..%2F..%2F..%2Foutside/pipeline.pb"}, None, 403, "PERMISSION_DENIED"),
        ({}, [{"name": "a.whl", "location": f"{root}/link/a.whl"}], 403, "PERMISSION_DENIED"),
        ({}, [{"name": "a.whl", "location": f"{root}/a.whl\x00"}], 400, "INVALID_ARGUMENT"),
    ]
    for options, packages, code, status in cases:
        error_of(created(options, packages), code, status)
    error_of(created(tempStoragePrefix=f"{root}/../../outside"), 403, "PERMISSION_DENIED")
    assert api.all_jobs() == []


def test_flex_template_paths_that_escape_are_refused(site, project):
    api = Api(site.server.url, project)
    root, outside = site.start / "flex", site.outside
    root.mkdir()
    (root / "link").symlink_to(outside)
    (outside / "main.py").write_text("print('outside')\n")
    (root / "main.py").write_text("print('inside')\n")
    spec = {
        "image": "x",
        "sdkInfo": {"language": "PYTHON"},
        "metadata": {
            "name": "f",
            "parameters": [{"name": "input", "label": "i", "helpText": "i", "paramType": "GCS_READ_FILE"}],
        },
    }
    outside_program = {**spec, "beamport": {"pythonFile": str(root / "link" / "main.py")}}
    (root / "outside-program.json").write_text(json.dumps(outside_program))
    (root / "spec.json").write_text(json.dumps({**spec, "beamport": {"pythonFile": str(root / "main.py")}}))
    (outside / "spec.json").write_text(json.dumps({**spec, "beamport": {"pythonFile": str(root / "main.py")}}))
    open_spec = {**spec, "metadata": {"name": "open"}, "beamport": {"pythonFile": str(root / "main.py")}}
    (root / "open-spec.json").write_text(json.dumps(open_spec))  # no declared parameters: any option passes
    path = f"/v1b3/projects/{project}/locations/{REGION}/flexTemplates:launch"
    flex_dir = site.start / "data" / "templates" / "flex"
    before = site.snapshot()

    def launched(launch, validate_only=True):
        return api.client.post(path, json={"launchParameter": launch, "validateOnly": validate_only})

    good = {
        "jobName": "f",
        "containerSpecGcsPath": str(root / "spec.json"),
        "parameters": {"input": str(root / "main.py")},
    }
    assert launched(good).status_code == 200
    cases = [
        ({**good, "containerSpecGcsPath": f"{root}/../../outside/spec.json"}, 403, "PERMISSION_DENIED"),
        ({**good, "containerSpecGcsPath": f"{root}/link/spec.json"}, 403, "PERMISSION_DENIED"),
        ({**good, "containerSpecGcsPath": f"file://h{root}/spec.json"}, 400, "INVALID_ARGUMENT"),
        ({**good, "containerSpecGcsPath": str(root / "outside-program.json")}, 403, "PERMISSION_DENIED"),
        ({**good, "parameters": {"input": f"{root}/*/../../../outside/secret.txt"}}, 400, "INVALID_ARGUMENT"),
        ({**good, "parameters": {"input": f"{root}/link/secret.txt"}}, 403, "PERMISSION_DENIED"),
        ({**good, "environment": {"stagingLocation": f"{root}/link"}}, 403, "PERMISSION_DENIED"),
        ({**good, "environment": {"tempLocation": f"{root}/*/x"}}, 400, "INVALID_ARGUMENT"),
        (
            {
                **good,
                "containerSpecGcsPath": str(root / "open-spec.json"),
                "launchOptions": {"staging_location": f"{root}/../../outside"},
            },
            403,
            "PERMISSION_DENIED",
        ),
        (
            {
                **good,
                "containerSpecGcsPath": str(root / "open-spec.json"),
                "parameters": {"template_location": f"{root}/link/t"},
            },
            403,
            "PERMISSION_DENIED",
        ),
        (
            {**good, "environment": {"additionalPipelineOptions": [f"temp_location={outside}"]}},
            403,
            "PERMISSION_DENIED",
        ),
    ]
    for launch, code, status in cases:
        error_of(launched(launch), code, status)
    # The job name becomes the launcher's directory: no `..` out of it, even without validateOnly.
    for name in ["../../../../outside/x", "a/b", "UPPER"]:
        error_of(launched({**good, "jobName": name}, validate_only=False), 400, "INVALID_ARGUMENT")
    assert api.all_jobs() == []
    assert site.snapshot() == before
    assert not flex_dir.exists() or not any(flex_dir.iterdir())


# -- checked where the files are opened, in the worker -------------------------------------------------


def start_worker(site: Site, directory: Path) -> subprocess.Popen:
    """A worker for the site's server, allowed the start directory (the data dir is inside), run without the
    sandbox where it has one: the check under test is the templates' own."""
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-m",
        "beamport",
        "worker",
        "--endpoint",
        site.server.url,
        "--worker-id",
        "paths-worker",
        "--data-dir",
        str(directory),
        "--allow-path",
        str(site.start),
        "--poll-interval",
        "0.1",
    ]
    helped = subprocess.run([sys.executable, "-m", "beamport", "worker", "--help"], capture_output=True, text=True)
    if "--sandbox" in helped.stdout:
        args += ["--sandbox", "off"]
    log = open(directory.parent / "paths-worker.log", "ab")
    return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_links_swapped_while_jobs_wait_are_refused_where_files_are_opened(site, project, tmp_path):
    api = Api(site.server.url, project)
    root, outside = site.start / "swap", site.outside / "swap"
    for directory in (root / "d", root / "inside", root / "o", root / "t", outside / "d", outside / "o", outside / "t"):
        directory.mkdir(parents=True)
    (root / "d" / "secret.txt").write_text("inside words\n")
    (outside / "d" / "secret.txt").write_text("outside words\n")
    (root / "inside" / "secret.txt").write_text("linked inside\n")
    (root / "link").symlink_to(root / "inside")
    (outside / "secret.txt").write_text("outside words\n")
    (root / "words.txt").write_text("some words\n")
    (root / "t" / "a.csv").write_text("region,amount\nnorth,1\n")
    (outside / "t" / "a.csv").write_text("region,amount\nsecret,2\n")
    launch = f"/v1b3/projects/{project}/locations/{REGION}/templates:launch"

    def word_count(name, parameters):
        response = api.client.post(
            launch, params={"gcsPath": "builtin://Word_Count"}, json={"jobName": name, "parameters": parameters}
        )
        assert response.status_code == 200, response.text
        return response.json()["job"]["id"]

    # Launched while everything is inside: each check passes, and the jobs wait (no worker yet).
    read_swapped = word_count("read-swapped", {"inputFile": str(root / "d" / "secret.txt"), "output": str(root / "r1")})
    relinked = word_count("relinked", {"inputFile": str(root / "link" / "secret.txt"), "output": str(root / "r2")})
    write_swapped = word_count(
        "write-swapped", {"inputFile": str(root / "words.txt"), "output": str(root / "o" / "counts")}
    )
    tables = f"/beamport/v1/projects/{project}/sqlTables"
    added = api.client.post(tables, json={"name": "t", "path": str(root / "t" / "*.csv"), "format": "csv"})
    assert added.status_code == 200, added.text
    query = api.client.post(
        f"/beamport/v1/projects/{project}/locations/{REGION}/sql:query",
        json={"query": "SELECT region FROM t", "jobName": "sql-swapped", "output": str(root / "q")},
    )
    assert query.status_code == 200, query.text
    sql_swapped = query.json()["id"]

    # While they wait: directories swapped for links leading outside, and a link re-pointed outside.
    for name in ("d", "o", "t"):
        (root / name).rename(root / f"{name}-before")
        (root / name).symlink_to(outside / name)
    (root / "link").unlink()
    (root / "link").symlink_to(outside)

    worker = start_worker(site, tmp_path / "worker")
    try:
        finals = {
            job_id: wait_state(api, job_id, {"JOB_STATE_DONE", "JOB_STATE_FAILED"}, timeout=240)["currentState"]
            for job_id in (read_swapped, relinked, write_swapped, sql_swapped)
        }
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    for job_id, path in [(read_swapped, root / "d"), (write_swapped, root / "o"), (sql_swapped, root / "t")]:
        said = "\n".join(texts(api, job_id))
        assert finals[job_id] == "JOB_STATE_FAILED", said
        assert str(path) in said and "outside the allowed roots" in said, said
    # The re-pointed link: the job reads the path checked at the launch (the link resolved then).
    assert finals[relinked] == "JOB_STATE_DONE", texts(api, relinked)
    assert read_output(root / "r2") == ["inside: 1", "linked: 1"]
    assert read_output(root / "r1") == [] and read_output(root / "q") == []
    # Nothing was written outside.
    assert sorted(str(p.relative_to(outside)) for p in outside.rglob("*")) == [
        "d",
        "d/secret.txt",
        "o",
        "secret.txt",
        "t",
        "t/a.csv",
    ]
