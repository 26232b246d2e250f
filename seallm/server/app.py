"""The OpenAI-compatible HTTP front door of one live runtime (FastAPI).

Routes: `/v1/models` (and `/v1/models/{id}`), `/v1/completions`, `/v1/chat/completions`
(streaming and not), `/v1/placement` (the plan being served), `/health`, `/metrics`
(Prometheus), and FastAPI's `/openapi.json`, `/docs` and `/redoc` (their scripts served from
here, not a CDN, so they work offline). The app owns no model state: `create_app` is given the
runtime and the loaded models (service name -> model); its lifespan starts the runtime and
warms the models up (server/warmup.py), and drains the runtime at the end.

Request bodies pass `middleware.RequestBody` first (bounded, JSON whatever the Content-Type).
A request's tokenizing, chat-template rendering and checks run in a worker thread, off the
event loop, so that a large request cannot stall the others (streams, `/health`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline

import seallm
from seallm.models.loader import CHATML_TEMPLATE, GEMMA_CHAT_TEMPLATE, PACKAGED_KINDS
from seallm.request import Request, Status
from seallm.runtime.live import LiveRuntime
from seallm.server.errors import APIError, install_error_handlers, shown
from seallm.server.generate import (
    CLIENT_GONE,
    chat_prompt,
    check_supported,
    completion_prompt,
    make_generation,
    respond,
)
from seallm.server.metrics import ServerMetrics
from seallm.server.middleware import RequestBody
from seallm.server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)
from seallm.server.warmup import warm_up

if TYPE_CHECKING:
    from seallm.models.loader import LoadedModel

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "invalid request"),
        (404, "unknown model"),
        (413, "request body over server.max_body_mb"),
        (429, "queue full (see Retry-After)"),
        (503, "shutting down"),
    ]
}


def outcome_of(req: Request) -> str:
    if req.status is Status.FINISHED:
        return "completed"
    if req.error == CLIENT_GONE:
        return "cancelled"
    if req.error and req.error.startswith("internal error"):
        return "error"
    return "aborted"


def has_chat_template(model: LoadedModel) -> bool:
    """Whether the model ships its own chat template (the loader gives one that ships none a
    generic turn format: Gemma's markers, or ChatML)."""
    template = getattr(model.tokenizer, "chat_template", None)
    return bool(template) and template not in (GEMMA_CHAT_TEMPLATE, CHATML_TEMPLATE)


def model_kind(model: LoadedModel) -> str:
    """instruct or base: the catalog's word for a packaged model; otherwise instruct when the
    model ships a chat template (instruction-tuned checkpoints do, base ones mostly not)."""
    kind = PACKAGED_KINDS.get(model.name)
    if kind is not None:
        return kind
    return "instruct" if has_chat_template(model) else "base"


# What live serving does of the system's re-placement: nothing yet (the simulator's only).
LIVE_REPLACEMENT = "off (live serving keeps its placement; re-placement runs in the simulator)"


def live_description(description: str) -> str:
    """A system's description as it holds while serving live: without its re-placement."""
    head, *rest = description.split(", ")
    if "re-plac" in head and "no re-placement" not in head:
        return f"{head.split(':')[0]}: {LIVE_REPLACEMENT}"
    return ", ".join([head, *(p for p in rest if "re-plac" not in p)])


def create_app(
    runtime: LiveRuntime,
    models: dict[str, LoadedModel],
    drain_s: float = 30.0,
    max_body_mb: float = 4.0,
) -> FastAPI:
    metrics = ServerMetrics(list(models), runtime.snapshot)
    runtime.on_end = lambda r: metrics.ended(r, outcome_of(r))
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            # Before uvicorn binds the socket: no client meets a cold model.
            app.state.warmup_s = await warm_up(runtime, models)
            yield
        finally:
            await runtime.drain(drain_s)
            runtime.stop()

    app = FastAPIOffline(
        title="seallm",
        version=seallm.__version__,
        description="OpenAI-compatible serving of several LLMs on shared devices (SeaLLM).",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
    app.state.warmup_s = {}
    app.add_middleware(
        RequestBody,
        max_bytes=int(max_body_mb * 2**20),
        on_refused=lambda: metrics.count(None, "invalid"),
    )
    install_error_handlers(app)

    def openapi() -> dict[str, Any]:
        # The schema names the served models, so that clients (and fuzzers) see what is valid.
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for name in ("CompletionRequest", "ChatCompletionRequest"):
                schema["components"]["schemas"][name]["properties"]["model"]["enum"] = list(models)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def served(name: str, count: bool = True) -> LoadedModel:
        model = models.get(name)
        if model is None:
            if count:  # a generation request for no model
                metrics.count(None, "invalid")
            raise APIError(
                404,
                f"The model {shown(name)} does not exist; this server serves {', '.join(models)}",
                param="model",
                code="model_not_found",
            )
        return model

    def capacity(name: str) -> int:
        return min(e.kv.capacity_tokens(name) for e in runtime.controller.hosts[name])

    @app.get("/health")
    async def health() -> JSONResponse:
        if runtime.draining:
            return JSONResponse({"status": "draining"}, status_code=503)
        return JSONResponse({"status": "ok", "in_flight": runtime.in_flight})

    def card(name: str, m: LoadedModel) -> ModelCard:
        return ModelCard(
            id=name,
            created=created,
            max_model_len=min(m.max_context, capacity(name)),
            architecture=type(m.module).__name__,
            kind=model_kind(m),  # type: ignore[arg-type]
            has_chat_template=has_chat_template(m),
        )

    @app.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        return ModelList(data=[card(name, m) for name, m in models.items()])

    @app.get("/v1/models/{model_id:path}", response_model=ModelCard, responses={404: ERRORS[404]})
    async def retrieve_model(model_id: str) -> ModelCard:
        return card(model_id, served(model_id, count=False))

    def prepare(kind: str, body: Any, model: LoadedModel) -> Any:
        """The request's checks, prompt and parameters (in a worker thread: tokenizing and
        rendering a large prompt takes seconds)."""
        check_supported(body)
        if kind == "chat":
            prompt = chat_prompt(body, model)
            max_tokens = body.max_completion_tokens or body.max_tokens
        else:
            prompt = completion_prompt(body, model)
            max_tokens = body.max_tokens
        return make_generation(body, prompt, max_tokens, model, capacity(body.model))

    async def generate(kind: str, body: Any, request: HTTPRequest) -> Any:
        model = served(body.model)
        try:
            gen = await asyncio.to_thread(prepare, kind, body, model)
            return await respond(kind, runtime, body.model, body, gen, request)  # type: ignore[arg-type]
        except APIError as err:
            # Requests that were accepted are counted when they end (runtime.on_end).
            outcome = {400: "invalid", 429: "overloaded", 503: "rejected"}.get(err.status)
            if outcome is not None and err.code != "shutdown_aborted":
                metrics.count(body.model, outcome)
            raise

    @app.post(
        "/v1/completions",
        response_model=CompletionResponse,
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    )
    async def completions(
        body: CompletionRequest, request: HTTPRequest
    ) -> CompletionResponse | StreamingResponse:
        return await generate("completion", body, request)

    @app.post(
        "/v1/chat/completions",
        response_model=ChatCompletionResponse,
        responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
    )
    async def chat_completions(
        body: ChatCompletionRequest, request: HTTPRequest
    ) -> ChatCompletionResponse | StreamingResponse:
        return await generate("chat", body, request)

    @app.get("/v1/placement")
    async def placement() -> dict[str, Any]:
        ctl = runtime.controller
        s = ctl.system
        groups = []
        for g in ctl.plan.groups:
            engine = ctl.engines[g.id]
            kv = engine.kv.stats()
            groups.append(
                {
                    "id": g.id,
                    "node": g.node,
                    "devices": g.size,
                    "device": ctl.config.cluster.device,
                    "services": list(g.services),
                    "scheduler": engine.scheduler.name,
                    "kv": {
                        "layout": "unified" if engine.kv.shared else "static",
                        "total_bytes": kv.total_bytes,
                        "used_bytes": kv.used_bytes,
                        "free_pages": kv.free_pages,
                        "tokens_per_page": dict(engine.kv.tokens_per_page),
                        "capacity_tokens": {x: engine.kv.capacity_tokens(x) for x in g.services},
                    },
                }
            )
        return {
            "system": {
                "name": s.name,
                "scheduler": s.scheduler,
                "kv": s.kv,
                "preemption": s.preemption,
                "replacement": LIVE_REPLACEMENT if s.replacement != "none" else "off",
                "description": live_description(s.description),
            },
            "groups": groups,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
