"""Bad input: every case gets a 4xx in OpenAI's error format with a precise message, and the
server keeps serving. (Tiny models behind the real server; their context is 1024 tokens and
their vocabulary 300.)"""

from __future__ import annotations

import httpx
import pytest
from tiny_server import GEMMA, SMOL, running

C, CHAT = "/v1/completions", "/v1/chat/completions"
OK = {"model": SMOL, "prompt": "hi", "max_tokens": 2}
MSG = [{"role": "user", "content": "hi"}]
OK_CHAT = {"model": GEMMA, "messages": MSG, "max_tokens": 2}


@pytest.fixture(scope="module")
def server():
    with running() as srv:
        yield srv


# (id, path, body: dict | raw str | None, status, param, code, substring of the message)
CASES = [
    (
        "malformed-json",
        C,
        '{"model": "smollm2-135m", "prompt": ',
        400,
        None,
        None,
        "not valid JSON",
    ),
    ("not-an-object", C, "[1, 2]", 400, None, None, "must be a JSON object"),
    ("empty-body", C, "", 400, None, None, "body is missing"),
    ("missing-model", C, {"prompt": "hi"}, 400, "model", None, "Field required"),
    ("missing-prompt", C, {"model": SMOL}, 400, "prompt", None, "Field required"),
    (
        "unknown-model",
        C,
        OK | {"model": "gpt-9"},
        404,
        "model",
        "model_not_found",
        "'gpt-9' does not exist",
    ),
    ("model-not-a-string", C, OK | {"model": 7}, 400, "model", None, "valid string"),
    ("max-tokens-string", C, OK | {"max_tokens": "5"}, 400, "max_tokens", None, "valid integer"),
    (
        "max-tokens-zero",
        C,
        OK | {"max_tokens": 0},
        400,
        "max_tokens",
        None,
        "greater than or equal to 1",
    ),
    ("max-tokens-float", C, OK | {"max_tokens": 2.5}, 400, "max_tokens", None, "valid integer"),
    # Types are strict: 4.0 is a float, whatever JSON Schema says.
    (
        "max-tokens-integral-float",
        C,
        OK | {"max_tokens": 4.0},
        400,
        "max_tokens",
        None,
        "valid integer (got 4.0)",
    ),
    ("seed-integral-float", C, OK | {"seed": 7.0}, 400, "seed", None, "valid integer"),
    (
        "token-id-float",
        C,
        OK | {"prompt": [65, 66.0]},
        400,
        "prompt[1]",
        None,
        "prompt[1]: Input should be a valid integer (got 66.0)",
    ),
    (
        "prompt-lone-surrogate",
        C,
        '{"model": "smollm2-135m", "prompt": "ab\\ud800c", "max_tokens": 2}',
        400,
        "prompt",
        None,
        "prompt: invalid Unicode (lone surrogate U+D800 at position 2)",
    ),
    (
        "stop-lone-surrogate",
        C,
        '{"model": "smollm2-135m", "prompt": "a", "stop": ["\\udfff"]}',
        400,
        "stop",
        None,
        "stop[0]: invalid Unicode (lone surrogate U+DFFF at position 0)",
    ),
    (
        "long-model-name",
        C,
        OK | {"model": "m" * 100_000},
        404,
        "model",
        "model_not_found",
        "The model 'mmmmmmmm",
    ),
    (
        "deep-nesting",
        C,
        "[" * 100_000,
        400,
        None,
        None,
        "nested too deeply for the parser (level 257 opens at character 256)",
    ),
    (
        "invalid-utf8",
        C,
        b'{"model": "smollm2-135m", "prompt": "caf\xe9"}',
        400,
        None,
        None,
        "not valid UTF-8: byte 0xe9 at byte 40 (invalid continuation byte)",
    ),
    (
        "temperature-negative",
        C,
        OK | {"temperature": -0.1},
        400,
        "temperature",
        None,
        "greater than or equal to 0",
    ),
    (
        "temperature-too-high",
        C,
        OK | {"temperature": 2.5},
        400,
        "temperature",
        None,
        "less than or equal to 2",
    ),
    (
        "temperature-string",
        C,
        OK | {"temperature": "hot"},
        400,
        "temperature",
        None,
        "valid number",
    ),
    ("top-p-negative", C, OK | {"top_p": -0.1}, 400, "top_p", None, "greater than or equal to 0"),
    ("top-p-above-one", C, OK | {"top_p": 1.5}, 400, "top_p", None, "less than or equal to 1"),
    (
        "top-k-below-minus-one",
        C,
        OK | {"top_k": -2},
        400,
        "top_k",
        None,
        "greater than or equal to -1",
    ),
    ("seed-string", C, OK | {"seed": "abc"}, 400, "seed", None, "valid integer"),
    ("stream-not-bool", C, OK | {"stream": "yes"}, 400, "stream", None, "valid boolean"),
    (
        "stop-five-strings",
        C,
        OK | {"stop": ["a", "b", "c", "d", "e"]},
        400,
        "stop",
        None,
        "at most 4",
    ),
    ("stop-number", C, OK | {"stop": 5}, 400, "stop", None, "valid"),
    ("stop-empty-string", C, OK | {"stop": [""]}, 400, "stop", None, "must not be empty"),
    ("n-two", C, OK | {"n": 2}, 400, "n", "unsupported_parameter", "only n=1"),
    ("echo", C, OK | {"echo": True}, 400, "echo", "unsupported_parameter", "echo"),
    ("logprobs", C, OK | {"logprobs": 2}, 400, "logprobs", "unsupported_parameter", "logprobs"),
    (
        "presence-penalty-out-of-range",
        C,
        OK | {"presence_penalty": 3},
        400,
        "presence_penalty",
        None,
        "less than or equal to 2",
    ),
    (
        "presence-penalty-unsupported",
        C,
        OK | {"presence_penalty": 1.0},
        400,
        "presence_penalty",
        "unsupported_parameter",
        "penalties are not supported",
    ),
    ("empty-prompt", C, OK | {"prompt": ""}, 400, "prompt", None, "must not be empty"),
    (
        "token-out-of-vocab",
        C,
        OK | {"prompt": [1, 2, 300]},
        400,
        "prompt",
        None,
        "token id 300 is outside",
    ),
    ("batched-prompts", C, OK | {"prompt": ["a", "b"]}, 400, "prompt", None, "batched prompts (2)"),
    (
        "prompt-longer-than-context",
        C,
        OK | {"prompt": [65] * 1100},
        400,
        "prompt",
        "context_length_exceeded",
        "maximum context length is 1024 tokens",
    ),
    (
        "prompt-plus-max-tokens-too-long",
        C,
        OK | {"prompt": [65] * 1000, "max_tokens": 100},
        400,
        "max_tokens",
        "context_length_exceeded",
        "you requested 1100 tokens",
    ),
    ("chat-missing-messages", CHAT, {"model": GEMMA}, 400, "messages", None, "Field required"),
    (
        "chat-empty-messages",
        CHAT,
        OK_CHAT | {"messages": []},
        400,
        "messages",
        None,
        "at least 1 item",
    ),
    (
        "chat-bad-role",
        CHAT,
        OK_CHAT | {"messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages[0].role",
        None,
        "'system', 'developer', 'user', 'assistant' or 'tool'",
    ),
    (
        "chat-content-number",
        CHAT,
        OK_CHAT | {"messages": [{"role": "user", "content": 3}]},
        400,
        "messages[0].content",
        None,
        "valid",
    ),
    (
        "chat-content-null",
        CHAT,
        OK_CHAT | {"messages": [{"role": "user", "content": None}]},
        400,
        "messages[0].content",
        None,
        "messages[0].content: must not be null",
    ),
    (
        "chat-content-missing",
        CHAT,
        OK_CHAT | {"messages": [{"role": "system"}, *MSG]},
        400,
        "messages[0].content",
        None,
        "messages[0].content: Field required",
    ),
    (
        "chat-assistant-content-null",
        CHAT,
        OK_CHAT | {"messages": [*MSG, {"role": "assistant", "content": None}, *MSG]},
        400,
        "messages[1].content",
        None,
        "must not be null",
    ),
    (
        "chat-lone-surrogate",
        CHAT,
        '{"model": "gemma-3-270m", "messages": [{"role": "user", "content": "\\ud83d!"}]}',
        400,
        "messages",
        None,
        "messages[0].content: invalid Unicode (lone surrogate U+D83D at position 0)",
    ),
    (
        "chat-image-part",
        CHAT,
        OK_CHAT
        | {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ]
        },
        400,
        "messages[0].content[0].type",
        None,
        "'text'",
    ),
    (
        "chat-tools",
        CHAT,
        OK_CHAT | {"tools": [{"type": "function"}]},
        400,
        "tools",
        "unsupported_parameter",
        "tool calling is not supported",
    ),
    (
        "chat-unknown-model",
        CHAT,
        OK_CHAT | {"model": "nope"},
        404,
        "model",
        "model_not_found",
        "does not exist",
    ),
    (
        "chat-max-completion-tokens-zero",
        CHAT,
        OK_CHAT | {"max_completion_tokens": 0},
        400,
        "max_completion_tokens",
        None,
        "greater than or equal to 1",
    ),
    (
        "unknown-url",
        "/v1/embeddings",
        OK,
        404,
        None,
        "unknown_url",
        "Unknown URL: POST /v1/embeddings",
    ),
]


def send(url: str, path: str, body: dict | str | bytes | None) -> httpx.Response:
    if isinstance(body, str | bytes):
        return httpx.post(
            url + path, content=body, headers={"content-type": "application/json"}, timeout=30
        )
    return httpx.post(url + path, json=body, timeout=30)


@pytest.mark.parametrize(
    "path, body, status, param, code, text", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(server, path, body, status, param, code, text):
    resp = send(server.url, path, body)
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert err["code"] == code
    assert text in err["message"], err["message"]
    assert len(err["message"]) < 400  # what the client sent is echoed cut short


def test_top_p_zero_keeps_the_most_likely_token(server):
    # As the README says (and vLLM does): a top_p below 1e-5 is the most likely token only.
    args = OK | {"prompt": "nucleus", "max_tokens": 12, "ignore_eos": True}
    greedy = send(server.url, C, args | {"temperature": 0})
    nucleus = send(server.url, C, args | {"temperature": 1.0, "top_p": 0})
    assert greedy.status_code == nucleus.status_code == 200, nucleus.text
    assert nucleus.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]


def test_unknown_model_retrieve_is_404_with_the_name_cut(server):
    resp = httpx.get(server.url + "/v1/models/" + "n" * 10_000, timeout=30)
    assert resp.status_code == 404
    err = resp.json()["error"]
    assert (err["type"], err["param"], err["code"]) == (
        "invalid_request_error",
        "model",
        "model_not_found",
    )
    assert err["message"].startswith("The model 'nnn") and "...' " not in err["message"]
    assert "..." in err["message"] and len(err["message"]) < 200


def test_wrong_method_is_405_in_openai_format(server):
    resp = httpx.get(server.url + C)
    assert resp.status_code == 405
    assert resp.json()["error"]["code"] == "method_not_allowed"


def test_server_still_serves_after_bad_input_and_counts_it(server):
    for _, path, body, *_ in CASES[:8]:
        send(server.url, path, body)
    assert send(server.url, C, OK).status_code == 200
    assert send(server.url, CHAT, OK_CHAT).status_code == 200
    metrics = httpx.get(server.url + "/metrics").text
    invalid = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("seallm_requests_total{") and 'outcome="invalid"' in line
    ]
    assert sum(invalid) >= 2  # the unknown models and the typed errors after the model check
