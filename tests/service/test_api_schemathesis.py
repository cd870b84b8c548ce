"""Schemathesis against the live server's OpenAPI schema: no generated request gets a 5xx.

Every GET and POST operation (the job routes included: this server has no worker, so accepted
jobs only wait in its embedded on-disk queue; the alias ``PUT`` is left out because it moves
serving state) gets 15 schema-conforming and 15 schema-violating requests, sent with an
all-scopes token. Bounded to well under 90 s.
"""

from __future__ import annotations

from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.support.api_server import ALL

pytestmark = pytest.mark.integration

EXAMPLES = 15


def _operations(url: str) -> list:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json").include(method=["GET", "POST"])
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz(operation, mode: GenerationMode, url: str, statuses: Counter, failures: list) -> None:
    """Send ``EXAMPLES`` generated requests for one operation; record statuses and any 5xx."""

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def check(case) -> None:
        response = case.call(base_url=url, headers=ALL, timeout=120)
        statuses[f"{case.method} {operation.path} {response.status_code}"] += 1
        if response.status_code >= 500:
            failures.append(
                f"{case.method} {case.formatted_path} ({mode.value}) -> "
                f"{response.status_code}: {response.text[:300]}\n"
                f"  reproduce: {case.as_curl_command()}"
            )

    try:
        check()
    except Unsatisfiable:  # nothing to violate (an operation without inputs)
        assert mode == GenerationMode.NEGATIVE


def test_no_server_errors(live_server):
    operations = _operations(live_server.url)
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /predict",
        "POST /explain",
        "GET /models",
        "GET /models/{name}",
        "GET /models/{name}/{selector}",
        "GET /readyz",
        "POST /jobs/training",
        "POST /jobs/evaluation",
        "GET /jobs/{job_id}",
    }
    failures: list[str] = []
    statuses: Counter[str] = Counter()
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, live_server.url, statuses, failures)
    print("\n".join(f"{key}: {count}" for key, count in sorted(statuses.items())))
    assert sum(statuses.values()) >= len(operations) * EXAMPLES
    assert not failures, "\n".join(failures[:10])
