"""Schema-driven fuzzing of the serving API (schemathesis over its OpenAPI): never a 5xx.

The cases come from schemathesis' Hypothesis strategies for every operation of the app's
OpenAPI document, valid ones and ones that break the schema, and are sent in-process to
the running app (its start-up done, tenants loaded) with a valid API key.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from conftest import ServedRegion, client_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode


def test_no_generated_request_gets_a_server_error(region: ServedRegion) -> None:
    with client_for(region.platform, refresh=False) as client:  # runs the app's start-up
        schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
        operations = [result.ok() for result in schema.get_all_operations()]
        strategy = st.one_of(
            [
                op.as_strategy(generation_mode=mode)
                for op in operations
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            ]
        )
        headers = {"Authorization": f"Bearer {region.keys['shop']}"}
        statuses: set[int] = set()

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def call(case: Any) -> None:
            response = case.call(headers=headers)
            statuses.add(response.status_code)
            assert response.status_code < 500, (case.method, case.path, case.body, response.text)

        call()
    assert 200 in statuses and 422 in statuses  # both valid and invalid requests were tried
