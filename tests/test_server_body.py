"""Request bodies: JSON whatever the Content-Type says, bounded in size (413 in OpenAI's format,
declared or chunked), and a large request's tokenizing off the event loop, so that `/health`
and running streams go on meanwhile. (Tiny models behind the real server.)"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from tiny_server import GEMMA, SMOL, running, tiny_models, tiny_settings

from seallm.config import ConfigError

C = "/v1/completions"
OK = {"model": SMOL, "prompt": "hi", "max_tokens": 2}
LIMIT_MB = 0.25  # the test server's max_body_mb: 256 KiB


@pytest.fixture(scope="module")
def server():
    with running(tiny_settings(max_body_mb=LIMIT_MB)) as srv:
        yield srv


def assert_openai_error(resp: httpx.Response, status: int, code: str | None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["code"] == code
    return err


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_a_json_body_is_taken_whatever_its_content_type(server, content_type):
    # curl -d sends application/x-www-form-urlencoded; this was a 500 (TypeError).
    headers = {"content-type": content_type} if content_type else {}
    resp = httpx.post(server.url + C, content=json.dumps(OK), headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["usage"]["completion_tokens"] == 2


def test_a_non_json_body_without_json_content_type_is_a_clear_400(server):
    resp = httpx.post(server.url + C, content=b"model=x&prompt=y", timeout=30)
    err = assert_openai_error(resp, 400, None)
    assert "not valid JSON" in err["message"]


def test_shown_takes_any_value():
    from seallm.server.errors import shown

    assert shown(b'{"model": 1}') == "b'{\"model\": 1}'"
    assert shown(bytearray(b"x" * 500)).endswith("...") and len(shown(b"x" * 500)) == 60
    assert shown("a\ud800b") == "'a\\ud800b'"
    assert shown({1, 2}) == "{1, 2}"
    assert shown(object()).startswith("<object")
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert shown(deep)  # neither json nor repr can write it


def test_a_body_over_the_limit_gets_413_declared_or_chunked(server):
    limit = int(LIMIT_MB * 2**20)
    big = json.dumps(OK | {"junk": "x" * (limit + 1000)}).encode()
    declared = httpx.post(server.url + C, content=big, timeout=30)
    err = assert_openai_error(declared, 413, "request_too_large")
    assert f"limit of 0.25 MiB ({limit} bytes): got {len(big)} bytes" in err["message"]
    assert "server.max_body_mb" in err["message"]

    def chunks():  # no Content-Length: Transfer-Encoding: chunked
        for i in range(0, len(big), 16384):
            yield big[i : i + 16384]

    chunked = httpx.post(server.url + C, content=chunks(), timeout=30)
    err = assert_openai_error(chunked, 413, "request_too_large")
    assert "got more than that" in err["message"]
    # Just under the limit is read and parsed (the junk field is ignored).
    fits = json.dumps(OK | {"junk": "x" * (limit - 200)}).encode()
    assert len(fits) <= limit
    assert httpx.post(server.url + C, content=fits, timeout=30).status_code == 200
    assert httpx.get(server.url + "/health").status_code == 200


def test_max_body_mb_is_checked():
    with pytest.raises(ConfigError, match=r"server\.max_body_mb must be a positive number"):
        tiny_settings(max_body_mb=0)


def test_health_and_streams_go_on_while_a_large_request_is_tokenized():
    """The large request's tokenizer call is held at a gate until /health has answered and
    a running stream has delivered tokens: with tokenizing on the event loop, neither could
    (they would wait for the gate, and time out)."""
    models = tiny_models()
    smol = models[SMOL]
    entered, release = threading.Event(), threading.Event()
    encode = smol.encode

    def gated(text: str) -> list[int]:
        if len(text) > 100_000:
            entered.set()
            release.wait(20)
        return encode(text)

    smol.encode = gated  # type: ignore[method-assign]
    with running(models=models) as srv:
        stream_body = {
            "model": GEMMA,
            "prompt": "s",
            "max_tokens": 1000,
            "ignore_eos": True,
            "stream": True,
        }
        big_body = {"model": SMOL, "prompt": "x" * 1_000_000, "max_tokens": 2}  # 1 MB: allowed
        result: dict[str, httpx.Response] = {}
        big = threading.Thread(
            target=lambda: result.update(r=httpx.post(srv.url + C, json=big_body, timeout=60))
        )
        try:
            with httpx.stream("POST", srv.url + C, json=stream_body, timeout=30) as stream:
                events = stream.iter_lines()
                assert next(e for e in events if e.startswith("data:"))
                big.start()
                assert entered.wait(20), "the large request never reached the tokenizer"
                t0 = time.monotonic()
                health = httpx.get(srv.url + "/health", timeout=2.0)
                assert health.status_code == 200
                got = 0
                for line in events:
                    got += line.startswith("data:")
                    if got == 5:
                        break
                waited = time.monotonic() - t0
                assert got == 5 and waited < 5.0, waited
                assert not release.is_set() and big.is_alive()  # still held at the gate
        finally:
            release.set()
            big.join(60)
        err = assert_openai_error(result["r"], 400, "context_length_exceeded")
        assert "the prompt has 1000000 tokens" in err["message"]
