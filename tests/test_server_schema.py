"""Schemathesis fuzzes every operation of the served OpenAPI schema against a real server,
with requests that fit the schema and requests that do not: no answer may be a 5xx, and every
4xx must be in OpenAI's error format. (Schemathesis' pytest plugin does not run under this
pytest, so its strategies drive Hypothesis directly.)

Bounded so that it checks "no 5xx" in well under a minute on a busy 2-core machine: the
server's KV pool holds a few hundred tokens per model, so any request asking for more is
refused at once (400) and the rest generate at most that many tokens of a tiny model; and
the number of examples is fixed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from tiny_server import running, tiny_settings

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import GenerationMode  # noqa: E402

pytestmark = pytest.mark.slow  # real servers end to end


@pytest.fixture(scope="module")
def server():
    with running(tiny_settings(kv_pool_mb=0.25)) as srv:
        yield srv


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_server_errors(server, mode):
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    seen: set[str] = set()

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        seen.add(f"{case.operation.method.upper()} {case.operation.path}")
        response = case.call(base_url=server.url, timeout=30)
        assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
        if response.status_code >= 400:
            err = response.json()["error"]
            assert set(err) == {"message", "type", "param", "code"}
            assert isinstance(err["message"], str) and err["message"]

    check()
    assert {"POST /v1/completions", "POST /v1/chat/completions"} <= seen
