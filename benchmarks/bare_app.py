"""The yardstick of benchmarks/api_vs_bare_bench.py: a bare Starlette app under uvicorn that answers jobs.get
from memory, with nothing else on the way (no store, no authentication, no middleware, no checks).

It loads a JSON file of {job id: job document} (what Beamport answers for each job, JOB_VIEW_SUMMARY) and
answers GET /v1b3/projects/{projectId}/locations/{location}/jobs/{jobId} with the document encoded as
Beamport encodes it (orjson, indented: the same bytes), or 404. uvicorn runs with Beamport's settings
(uvloop, httptools, no access log); it imports nothing of Beamport.

    python benchmarks/bare_app.py --port 8081 --documents docs.json
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

JSON_TYPE = "application/json; charset=UTF-8"


def make_app(documents: dict[str, dict]) -> Starlette:
    async def get_job(request: Request) -> Response:
        document = documents.get(request.path_params["jobId"])
        if document is None:
            return Response(b'{"error": {"code": 404}}', status_code=404, media_type=JSON_TYPE)
        return Response(orjson.dumps(document, option=orjson.OPT_INDENT_2), media_type=JSON_TYPE)

    return Starlette(routes=[Route("/v1b3/projects/{projectId}/locations/{location}/jobs/{jobId}", get_job)])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--documents", required=True, help="JSON file: {job id: job document}")
    args = parser.parse_args(argv)
    with open(args.documents, "rb") as f:
        documents = orjson.loads(f.read())
    uvicorn.run(
        make_app(documents),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
