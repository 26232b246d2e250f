"""Send one streamed completion to an OpenAI-compatible server and time it.

Prompts are text of common English words, not token ids: every OpenAI-compatible server
accepts text, and a tokenizer-free client works against any model. Each prompt starts with its
request number, so no two share a prefix (a server's prefix cache must not flatter it). The
words per token of each model are measured once (`words_per_token`) so that a prompt has
about the trace's number of tokens; the server's reported `usage` gives the exact counts.
Requests ask for exactly the trace's output length (`max_tokens` with `ignore_eos`, a vLLM
extension seallm also implements).

Times are client-side, in seconds from the run's start: sent (the request left), first token
(the first chunk with a choice arrived), finished (the stream ended).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import httpx
import numpy as np

_WORD_TEXT = (
    "time year people way day man thing woman life child world school state family student "
    "group country problem hand part place case week company system program question work "
    "government number night point home water room mother area money story fact month lot "
    "right study book eye job word business issue side kind head house service friend father "
    "power hour game line end member law car city community name president team minute idea "
    "kid body information back parent face others level office door health person art war "
    "history party result change morning reason research girl guy moment air teacher force "
    "education foot boy age policy music market sense nation plan college interest death "
    "experience effect use class control care field development role effort rate heart drug "
    "show leader light voice wife police mind price report decision son view relationship town"
)
WORDS = _WORD_TEXT.split()


@dataclass
class Timing:
    service: str
    sent: float
    first_token: float | None = None
    finished: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    status: str = "ok"  # ok | rejected (429/503) | error
    error: str | None = None


def make_prompt(index: int, tokens: int, words_per_token: float, rng: np.random.Generator) -> str:
    n = max(1, round(tokens * words_per_token) - 2)
    return f"{index}: " + " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), n))


async def stream_completion(
    client: httpx.AsyncClient,
    base_url: str,
    model: str,
    prompt: str,
    max_tokens: int,
    t0: float,
    service: str | None = None,
) -> Timing:
    """POST a streamed /completions request and time it; never raises for HTTP errors."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    t = Timing(service or model, time.perf_counter() - t0)
    chunks = 0
    try:
        async with client.stream("POST", f"{base_url}/completions", json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                t.status = "rejected" if resp.status_code in (429, 503) else "error"
                t.error = f"HTTP {resp.status_code}: {text[:300]}"
                return t
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    t.status, t.error = "error", str(event["error"].get("message"))
                    return t
                if event.get("choices"):
                    chunks += 1
                    if t.first_token is None:
                        t.first_token = time.perf_counter() - t0
                if event.get("usage"):
                    t.prompt_tokens = int(event["usage"]["prompt_tokens"])
                    t.output_tokens = int(event["usage"]["completion_tokens"])
    except (httpx.HTTPError, json.JSONDecodeError) as err:
        t.status, t.error = "error", f"{type(err).__name__}: {err}"
        return t
    t.finished = time.perf_counter() - t0
    if not t.output_tokens:  # a server without usage in streams: one chunk per token
        t.output_tokens = chunks
    return t


async def served_models(client: httpx.AsyncClient, base_url: str) -> list[str]:
    resp = await client.get(f"{base_url}/models")
    resp.raise_for_status()
    return [m["id"] for m in resp.json()["data"]]


async def words_per_token(
    client: httpx.AsyncClient, base_url: str, model: str, rng: np.random.Generator
) -> float:
    """Words per prompt token of `model`, from the server's own count of a 50-word prompt."""
    words = 50
    prompt = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), words))
    body = {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0.0}
    resp = await client.post(f"{base_url}/completions", json=body)
    resp.raise_for_status()
    return words / max(1, int(resp.json()["usage"]["prompt_tokens"]))
