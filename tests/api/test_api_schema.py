"""The OpenAPI document: bounds documented, errors as problem+json, and a schemathesis run.

The schemathesis run generates requests from the app's own schema, valid ones and
invalid ones, for every operation (a bounded number of examples each, so the suite stays
quick), and checks that no response is a server error and that every response matches
what the schema says: status code, content type, headers and body. Schema-valid requests
may still be refused (a layout rule, an unknown name): ``positive_data_acceptance`` is
not among the checks for that reason.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from api.settings import ApiSettings

EXAMPLES_PER_OPERATION = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


def _app_schema() -> schemathesis.schemas.BaseSchema:
    # Loaded when the module is collected (schemathesis's lazy fixture loader does not work
    # with pytest 9). No planning workers: submitted jobs stay queued and the small queue
    # fills up, so the 503 answer is exercised too. The database lives as long as the
    # process: schemathesis keeps the app's lifespan open until exit.
    folder = tempfile.mkdtemp(prefix="autopar-schemathesis-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    database = Path(folder) / "autopar.db"
    app = create_app(
        ApiSettings(database_url=f"sqlite:///{database}", job_workers=0, max_queued_jobs=8)
    )
    return schemathesis.openapi.from_asgi("/v1/openapi.json", app)


schema = _app_schema()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_response_matches_the_schema(case) -> None:
    case.call_and_validate(checks=CHECKS)


def test_bounds_and_errors_are_documented(client) -> None:
    document = client.get("/v1/openapi.json").json()
    description = document["info"]["description"]
    for bound in ("16384 GPUs", "candidate layouts", "time limit at most 60 s", "1048576 bytes"):
        assert bound in description
    components = document["components"]["schemas"]
    plan = components["PlanRequest"]["properties"]
    assert plan["time_limit"]["maximum"] == 60.0
    assert "AUTOPAR_MAX_TIME_LIMIT_S" in plan["time_limit"]["description"]
    assert plan["gpus"]["anyOf"][0]["maximum"] == 16384
    assert components["ModelInput"]["properties"]["num_layers"]["maximum"] == 1024
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"], (
                        method,
                        path,
                        status,
                    )
            if path != "/v1/health":
                assert "401" in operation["responses"], (method, path)
    submit = document["paths"]["/v1/plans"]["post"]["responses"]
    assert "Retry-After" in submit["503"]["headers"]
    assert "Location" in submit["202"]["headers"]
