"""The OpenAI-compatible HTTP front door of one live runtime (FastAPI).

Routes: `/v1/models`, `/v1/completions`, `/v1/chat/completions` (streaming and not),
`/v1/placement` (the plan being served), `/health`, `/metrics` (Prometheus), and FastAPI's
`/openapi.json` and `/docs`. The app owns no model state: `create_app` is given the runtime and
the loaded models (service name -> model), and starts and drains the runtime in its lifespan.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response, StreamingResponse

import seallm
from seallm.request import Request, Status
from seallm.runtime.live import LiveRuntime
from seallm.server.errors import APIError, install_error_handlers
from seallm.server.generate import (
    CLIENT_GONE,
    chat_prompt,
    check_supported,
    completion_prompt,
    make_generation,
    respond,
)
from seallm.server.metrics import ServerMetrics
from seallm.server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelCard,
    ModelList,
)

if TYPE_CHECKING:
    from seallm.models.loader import LoadedModel

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in [
        (400, "invalid request"),
        (404, "unknown model"),
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


def create_app(
    runtime: LiveRuntime, models: dict[str, LoadedModel], drain_s: float = 30.0
) -> FastAPI:
    metrics = ServerMetrics(list(models), runtime.snapshot)
    runtime.on_end = lambda r: metrics.ended(r, outcome_of(r))
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            await runtime.drain(drain_s)
            runtime.stop()

    app = FastAPI(
        title="seallm",
        version=seallm.__version__,
        description="OpenAI-compatible serving of several LLMs on shared devices (SeaLLM).",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    app.state.metrics = metrics
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

    def served(name: str) -> LoadedModel:
        model = models.get(name)
        if model is None:
            metrics.count(None, "invalid")
            raise APIError(
                404,
                f"The model {name!r} does not exist; this server serves {', '.join(models)}",
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

    @app.get("/v1/models", response_model=ModelList)
    async def list_models() -> ModelList:
        return ModelList(
            data=[
                ModelCard(
                    id=name,
                    created=created,
                    max_model_len=min(m.max_context, capacity(name)),
                    architecture=type(m.module).__name__,
                )
                for name, m in models.items()
            ]
        )

    async def generate(kind: str, body: Any, request: HTTPRequest) -> Any:
        model = served(body.model)
        try:
            check_supported(body)
            if kind == "chat":
                prompt = chat_prompt(body, model)
                max_tokens = body.max_completion_tokens or body.max_tokens
            else:
                prompt = completion_prompt(body, model)
                max_tokens = body.max_tokens
            gen = make_generation(body, prompt, max_tokens, model, capacity(body.model))
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
                "description": s.description,
            },
            "groups": groups,
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
