"""From an OpenAI request to a running generation, and back: tokenize and check the request,
submit it to the runtime, and answer with one JSON body or a stream of server-sent events.

A request the runtime accepted always ends with an answer: its completion, or an error (in
a stream, an `{"error": ...}` event before `[DONE]`). A client that goes away is noticed (the
stream is cancelled, or a non-streaming wait polls the connection) and its request aborted, so
its KV pages are freed.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Literal

from fastapi import Request as HTTPRequest
from fastapi.responses import StreamingResponse

from seallm.models.sampling import Generation, SamplingParams
from seallm.runtime.live import (
    SHUTDOWN_REASON,
    LiveRuntime,
    Overloaded,
    Rejected,
    ShuttingDown,
    Stream,
    TokenEvent,
)
from seallm.server.errors import APIError, bad_request, clip, error_body
from seallm.server.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    Usage,
    _Sampling,
)

if TYPE_CHECKING:
    from seallm.models.loader import LoadedModel

CLIENT_GONE = "the client disconnected"
SAMPLING_EPS = 1e-5
Kind = Literal["completion", "chat"]


def check_supported(body: _Sampling) -> None:
    problem = body.unsupported()
    if problem is not None:
        param, message = problem
        raise bad_request(message, param=param, code="unsupported_parameter")
    for i, s in enumerate(body.stop_list):
        if not s:
            raise bad_request(f"stop[{i}]: stop sequences must not be empty", param="stop")
        check_text(s, f"stop[{i}]", "stop")


def check_text(text: str, where: str, param: str) -> None:
    """Refuse text that is not Unicode a tokenizer can take: JSON may carry a lone surrogate
    (an escaped half of a UTF-16 pair, "\\ud800"), which no UTF-8 text holds."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise bad_request(
            f"{where}: invalid Unicode (lone surrogate U+{ord(text[err.start]):04X} at "
            f"position {err.start})",
            param=param,
        ) from None


def completion_prompt(body: CompletionRequest, model: LoadedModel) -> list[int]:
    prompt = body.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise bad_request(
                f"prompt: batched prompts ({len(prompt)}) are not supported; "
                "send one prompt per request",
                param="prompt",
            )
        prompt = prompt[0]
    if isinstance(prompt, str):
        check_text(prompt, "prompt", "prompt")
        ids = list(model.encode(prompt))
    else:
        ids = list(prompt)  # type: ignore[arg-type]
        vocab = model.spec.vocab_size
        for i, t in enumerate(ids):
            if not 0 <= t < vocab:
                raise bad_request(
                    f"prompt[{i}]: token id {t} is outside {model.name}'s vocabulary [0, {vocab})",
                    param="prompt",
                )
    if not ids:
        raise bad_request("prompt: must not be empty", param="prompt")
    return ids


def chat_prompt(body: ChatCompletionRequest, model: LoadedModel) -> list[int]:
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    for i, m in enumerate(messages):
        check_text(m["content"], f"messages[{i}].content", "messages")
    try:
        ids = list(model.apply_chat_template(messages))
    except Exception as err:  # a template may refuse a role order (e.g. no system role)
        raise bad_request(
            clip(f"messages: {model.name}'s chat template cannot render them: {err}", 300),
            param="messages",
        ) from err
    if not ids:
        raise bad_request("messages: the rendered prompt is empty", param="messages")
    return ids


def make_generation(
    body: _Sampling,
    prompt_ids: list[int],
    max_tokens: int | None,
    model: LoadedModel,
    kv_capacity: int,
) -> Generation:
    """Check the lengths against the context and build the generation's parameters."""
    limit = min(model.max_context, kv_capacity)
    n = len(prompt_ids)
    if n >= limit:
        raise bad_request(
            f"This model's maximum context length is {limit} tokens, and the prompt has {n} "
            "tokens. Please reduce the length of the prompt.",
            param="messages" if isinstance(body, ChatCompletionRequest) else "prompt",
            code="context_length_exceeded",
        )
    if max_tokens is None:  # OpenAI's chat default: as many as the context leaves
        max_tokens = limit - n
    if n + max_tokens > limit:
        raise bad_request(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{n + max_tokens} tokens ({n} in the prompt, {max_tokens} in the completion). "
            "Please reduce the length of the prompt or completion.",
            param="max_tokens",
            code="context_length_exceeded",
        )
    temperature = 1.0 if body.temperature is None else body.temperature
    top_p = 1.0 if body.top_p is None else body.top_p
    params = SamplingParams(
        max_tokens=max_tokens,
        # As vLLM does: a temperature this small is greedy (dividing logits by it overflows),
        # and a nucleus this small keeps the most likely token only, as one of SAMPLING_EPS.
        temperature=0.0 if temperature < SAMPLING_EPS else temperature,
        top_p=max(top_p, SAMPLING_EPS),
        top_k=0 if body.top_k in (None, -1) else body.top_k,
        seed=body.seed,
        stop=body.stop_list,
        ignore_eos=body.ignore_eos,
    )
    try:
        params.validate()
    except ValueError as err:
        raise bad_request(str(err)) from err
    return Generation(prompt_ids, params)


def submit(runtime: LiveRuntime, service: str, gen: Generation) -> Stream:
    try:
        return runtime.submit(service, gen)
    except Overloaded as err:
        raise APIError(
            429,
            f"Too many requests: {err}",
            "rate_limit_error",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(err.retry_after)},
        ) from err
    except ShuttingDown as err:
        raise APIError(503, str(err), "server_error", code="shutting_down") from err
    except Rejected as err:
        raise bad_request(str(err), code="context_length_exceeded") from err


def _failure(event: TokenEvent) -> APIError:
    if event.error == SHUTDOWN_REASON:  # accepted, then failed by the drain's deadline
        return APIError(503, event.error, "server_error", code="shutdown_aborted")
    return APIError(500, event.error or "generation failed", "server_error")


async def _disconnected(request: HTTPRequest) -> None:
    """Returns when the client closes the connection (the body is already read, so the next
    ASGI message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def collect(
    runtime: LiveRuntime, stream: Stream, request: HTTPRequest
) -> tuple[Generation, str]:
    """Wait for a non-streaming request's end; abort it if the client goes away."""
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            event_task = asyncio.ensure_future(stream.next())
            await asyncio.wait({event_task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not event_task.done():
                event_task.cancel()
                runtime.abort(stream, CLIENT_GONE)
                raise APIError(499, CLIENT_GONE)  # nobody reads it
            event = event_task.result()
            if event.error is not None:
                raise _failure(event)
            if event.final:
                return stream.generation, event.finish_reason or "stop"
    except asyncio.CancelledError:
        runtime.abort(stream, CLIENT_GONE)
        raise
    finally:
        gone.cancel()


def usage(stream: Stream) -> Usage:
    gen = stream.generation
    p, c = len(gen.prompt_ids), len(gen.output_ids)
    return Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)


def completion_body(
    kind: Kind, rid: str, created: int, model: str, stream: Stream, gen: Generation, reason: str
) -> CompletionResponse | ChatCompletionResponse:
    finish = "length" if reason == "length" else "stop"
    if kind == "chat":
        return ChatCompletionResponse(
            id=rid,
            created=created,
            model=model,
            choices=[ChatChoice(message=AssistantMessage(content=gen.text), finish_reason=finish)],
            usage=usage(stream),
        )
    return CompletionResponse(
        id=rid,
        created=created,
        model=model,
        choices=[CompletionChoice(text=gen.text, finish_reason=finish)],
        usage=usage(stream),
    )


def _sse(data: object) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


async def event_stream(
    kind: Kind,
    runtime: LiveRuntime,
    stream: Stream,
    rid: str,
    created: int,
    model: str,
    include_usage: bool,
) -> AsyncIterator[str]:
    """OpenAI's SSE chunks for one request; aborts the request if the client goes away
    (Starlette cancels this generator when the connection drops)."""
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    head = {"id": rid, "object": obj, "created": created, "model": model}

    def chunk(text: str | None, finish: str | None, role: bool = False) -> str:
        if kind == "chat":
            delta: dict[str, str] = {"role": "assistant"} if role else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, object] = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": text or ""}
        choice |= {"finish_reason": finish, "logprobs": None}
        body: dict[str, object] = {**head, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return _sse(body)

    ended = False
    try:
        if kind == "chat":
            yield chunk("", None, role=True)
        while True:
            event = await stream.next()
            if event.error is not None:
                ended = True
                err = _failure(event)
                yield _sse(error_body(err.message, err.type, None, err.code))
                break
            if event.text or event.final:
                finish = None
                if event.finish_reason is not None:
                    finish = "length" if event.finish_reason == "length" else "stop"
                yield chunk(event.text, finish)
            if event.final:
                ended = True
                if include_usage:
                    yield _sse({**head, "choices": [], "usage": usage(stream).model_dump()})
                break
        yield "data: [DONE]\n\n"
    finally:
        if not ended:
            runtime.abort(stream, CLIENT_GONE)


async def respond(
    kind: Kind,
    runtime: LiveRuntime,
    model: str,
    body: _Sampling,
    gen: Generation,
    request: HTTPRequest,
) -> CompletionResponse | ChatCompletionResponse | StreamingResponse:
    stream = submit(runtime, model, gen)
    rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            event_stream(kind, runtime, stream, rid, created, model, include),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    gen, reason = await collect(runtime, stream, request)
    return completion_body(kind, rid, created, model, stream, gen, reason)
