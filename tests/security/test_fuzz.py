"""Schemathesis over every REST and CDS Hooks route, with valid credentials: no 5xx.

REST operations come from the service's own ``/v1/openapi.json``; the CDS Hooks routes
(which CDS Hooks describes, not OpenAPI) from the request models the service parses.
Bounded (a few dozen examples per operation) so the run stays under a minute.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.core.result import Err

from serving.cds_models import CdsRequest, FeedbackRequest
from serving.rest import openapi_document
from tests.security.conftest import SecureService

_EXAMPLES = 30
_SERVICES = ["ncd-cvd-risk", "ncd-diabetes-risk", "no-such-service"]


def _body(model: type[Any], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def api_description() -> dict[str, Any]:
    """The REST description with the CDS Hooks routes added."""
    document = openapi_document()
    components = document["components"]["schemas"]
    service_id = {
        "name": "service_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": _SERVICES},
    }
    answers = {"200": {"description": "Answered (advisory)."}}
    document["paths"].update(
        {
            "/cds-services": {"get": {"responses": answers}},
            "/cds-services/{service_id}": {
                "post": {
                    "parameters": [service_id],
                    "requestBody": _body(CdsRequest, components),
                    "responses": answers,
                }
            },
            "/cds-services/{service_id}/feedback": {
                "post": {
                    "parameters": [service_id],
                    "requestBody": _body(FeedbackRequest, components),
                    "responses": answers,
                }
            },
        }
    )
    return document


@pytest.mark.slow
def test_no_route_answers_5xx(secure: SecureService) -> None:
    schema = schemathesis.openapi.from_dict(api_description())
    operations = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        operations.append(result.ok())
    assert len(operations) == 6
    seen: dict[str, set[int]] = {}

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=_EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            path = case.formatted_path
            auth = secure.token(path) if path.startswith("/cds-services") else None
            response = case.call(base_url=secure.url, headers=auth or secure.key("hospital-a"))
            seen.setdefault(case.operation.path, set()).add(response.status_code)
            assert response.status_code < 500, (path, response.status_code, response.text[:500])

        call()
    # Every operation was reached past authentication (a 401 everywhere would prove nothing).
    assert all(codes - {401} for codes in seen.values()), seen
