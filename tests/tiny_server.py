"""Servers for the serving tests: the cpu-duo deployment with tiny random-weight models (a
Llama and a Gemma 3 of a few layers, byte tokenizer) behind the real runtime, TorchExecutor
and HTTP server, on a free loopback port in a background thread."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from seallm.models.loader import LoadedModel, tiny_model
from seallm.presets import get_preset
from seallm.runtime.torch_engines import ExecutorFactory
from seallm.server.launch import ServerThread, build_server
from seallm.server.settings import ServerSpec, ServeSettings
from seallm.systems import get_system

SMOL, GEMMA = "smollm2-135m", "gemma-3-270m"
TINY_SOURCES = {SMOL: "tiny-llama", GEMMA: "tiny-gemma3"}


def tiny_settings(system: str = "seallm", **server: object) -> ServeSettings:
    cfg = get_preset("cpu-duo")
    cfg.engine.page_bytes = 64 * 1024  # a tiny model's token is ~0.5 KB: keep pages small
    spec = ServerSpec(port=0, kv_pool_mb=16, drain_s=5.0, models=dict(TINY_SOURCES))
    for key, value in server.items():
        setattr(spec, key, value)
    return ServeSettings(cfg, get_system(system), spec).validate()


def tiny_models() -> dict[str, LoadedModel]:
    return {SMOL: tiny_model("llama", seed=0), GEMMA: tiny_model("gemma3", seed=1)}


@contextmanager
def running(
    settings: ServeSettings | None = None,
    models: dict[str, LoadedModel] | None = None,
    executor_factory: ExecutorFactory | None = None,
) -> Iterator[ServerThread]:
    server = build_server(
        settings or tiny_settings(),
        models or tiny_models(),
        executor_factory,
        announce=lambda m: None,
        log_level="warning",
    )
    thread = ServerThread(server)
    try:
        yield thread
    finally:
        thread.stop()
