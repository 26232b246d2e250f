"""End to end with the official `openai` client against `seallm serve`'s default deployment:
the two real small models (SmolLM2-135M-Instruct, Gemma-3-270M) on this CPU, one server for
the module, over loopback HTTP; streaming and not, completions and chat, both models."""

from __future__ import annotations

import openai
import pytest
from tiny_server import GEMMA, SMOL, running

from seallm.server.launch import load_models
from seallm.server.settings import default_settings

pytestmark = pytest.mark.slow  # real servers end to end

MODELS = [SMOL, GEMMA]


@pytest.fixture(scope="module")
def client():
    settings = default_settings()
    settings.server.port = 0
    settings.server.kv_pool_mb = 256
    models = load_models(settings, announce=lambda m: None)  # converted once, then cached
    with running(settings, models) as srv:
        yield openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)


def test_models(client):
    assert [m.id for m in client.models.list()] == MODELS


def test_models_retrieve_and_kinds(client):
    # SmolLM2-135M-Instruct is tuned for chat; Gemma-3-270M is a base model with no template.
    smol, gemma = client.models.retrieve(SMOL), client.models.retrieve(GEMMA)
    assert (smol.id, smol.object, smol.owned_by) == (SMOL, "model", "seallm")
    assert (smol.kind, smol.has_chat_template) == ("instruct", True)
    assert (gemma.kind, gemma.has_chat_template) == ("base", False)
    assert smol.model_dump() == next(m for m in client.models.list() if m.id == SMOL).model_dump()
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-" + "4" * 1000)
    assert err.value.code == "model_not_found"
    assert len(err.value.message) < 300


@pytest.mark.parametrize("model", MODELS)
def test_completions_streamed_and_not(client, model):
    args = {"model": model, "prompt": "The capital of France is", "max_tokens": 6, "temperature": 0}
    full = client.completions.create(**args)
    text = full.choices[0].text
    assert text.strip()
    assert full.choices[0].finish_reason in ("length", "stop")
    assert full.usage.prompt_tokens >= 5
    assert 1 <= full.usage.completion_tokens <= 6
    chunks = list(client.completions.create(**args, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == text  # greedy: the same tokens
    assert chunks[-1].choices[0].finish_reason == full.choices[0].finish_reason


@pytest.mark.parametrize("model", MODELS)
def test_chat_streamed_and_not(client, model):
    args = {
        "model": model,
        "max_tokens": 8,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    full = client.chat.completions.create(**args)
    message = full.choices[0].message
    assert message.role == "assistant" and message.content
    stream = client.chat.completions.create(
        **args, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == message.content
    assert chunks[-1].usage.completion_tokens == full.usage.completion_tokens


def test_smollm2_answers_the_question(client):
    out = client.chat.completions.create(
        model=SMOL,
        max_tokens=12,
        temperature=0,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    assert "Paris" in out.choices[0].message.content


def test_sampling_options_through_the_client(client):
    args = {
        "model": SMOL,
        "prompt": "Once upon a time",
        "max_tokens": 8,
        "temperature": 0.9,
        "top_p": 0.95,
        "seed": 7,
    }
    a = client.completions.create(**args).choices[0].text
    b = client.completions.create(**args).choices[0].text
    assert a == b  # a seeded request draws the same tokens
    greedy = client.completions.create(**args | {"temperature": 0}).choices[0].text
    stop = greedy.strip()[:2]
    cut = client.completions.create(**args | {"temperature": 0, "stop": [stop]})
    assert stop not in cut.choices[0].text
    assert cut.choices[0].finish_reason == "stop"


def test_errors_reach_the_client_as_openai_exceptions(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="gpt-4", prompt="x", max_tokens=1)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model=SMOL, prompt="x", max_tokens=10**6)
    assert err.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(
            model=GEMMA, messages=[{"role": "user", "content": "x"}], temperature=3
        )
