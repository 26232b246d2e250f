"""Start a server: load the models, build the live runtime and the app, run uvicorn.

Startup: the models are loaded, then warmed up (server/warmup.py), and only then is the socket
bound and the URL announced, so that the first client finds the models warm.

Shutdown (SIGTERM or SIGINT, or `should_exit` in tests): the runtime stops accepting at once,
but the listening socket stays open while in-flight requests get up to `server.drain_s`
seconds to finish, so that a load balancer sees the drain: `/health` answers 503
`{"status": "draining"}` and a new generation request 503 (`shutting_down`). The ones still
running at the deadline are failed with an explicit error (a JSON 503, or an error event in a
stream); then the socket closes (connections are refused from then on), the engine threads
stop and the process exits with status 0. With nothing in flight that is at once. A second
Ctrl-C ends the drain early.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from seallm.runtime.live import LiveRuntime
from seallm.runtime.torch_engines import ExecutorFactory, live_controller, torch_executor_factory
from seallm.server.app import create_app
from seallm.server.settings import TINY_SOURCES, ServeSettings

if TYPE_CHECKING:
    from seallm.models.loader import LoadedModel

Announce = Callable[[str], None]


def load_models(settings: ServeSettings, announce: Announce = print) -> dict[str, LoadedModel]:
    """Load every service's model (the loader shows a progress bar when it converts)."""
    import torch

    from seallm.models.loader import load_model, tiny_model

    dtype = getattr(torch, settings.server.dtype)
    device = settings.server.device
    models = {}
    for i, s in enumerate(settings.config.services):
        source = settings.source_of(s.name)
        t0 = time.perf_counter()
        announce(f"loading {s.name} ({source}) ...")
        if source in TINY_SOURCES:
            models[s.name] = tiny_model(TINY_SOURCES[source], seed=i, device=device)
        else:
            models[s.name] = load_model(source, device=device, dtype=dtype, progress=True)
        announce(f"loaded {s.name} in {time.perf_counter() - t0:.1f} s")
    return models


class SeallmServer(uvicorn.Server):
    """uvicorn, with the runtime's drain at shutdown and the URL announced once bound."""

    def __init__(
        self,
        config: uvicorn.Config,
        runtime: LiveRuntime,
        drain_s: float,
        announce: Announce,
        app: FastAPI | None = None,
    ) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.drain_s = drain_s
        self.announce = announce
        self.app = app
        self.port: int | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)  # the lifespan (runtime start, warm-up), then the bind
        if self.servers and self.servers[0].sockets:
            self.port = self.servers[0].sockets[0].getsockname()[1]
        warm = getattr(self.app.state, "warmup_s", None) if self.app is not None else None
        if warm:
            self.announce(
                "warmed up " + ", ".join(f"{name} in {s:.1f} s" for name, s in warm.items())
            )
        ctl = self.runtime.controller
        self.announce(
            f"seallm serving {', '.join(ctl.hosts)} with the {ctl.system.name} system at "
            f"http://{self.config.host}:{self.port}/v1"
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Drain with the socket still open (new requests get 503), then close it.
        drain = asyncio.create_task(self.runtime.drain(self.drain_s))
        while not drain.done() and not self.force_exit:
            await asyncio.wait({drain}, timeout=0.1)
        if drain.done():
            failed = drain.result()
        else:  # forced: the process ends now
            drain.cancel()
            failed = 0
        if failed:
            self.announce(f"failed {failed} request(s) still running after {self.drain_s:g} s")
        await super().shutdown(sockets)
        # Drained: exit with status 0 rather than re-raising the signal (uvicorn's default,
        # which would end the process with the signal's status after a clean shutdown).
        self._captured_signals.clear()


def build_server(
    settings: ServeSettings,
    models: dict[str, LoadedModel] | None = None,
    executor_factory: ExecutorFactory | None = None,
    announce: Announce = print,
    log_level: str = "info",
) -> SeallmServer:
    if settings.server.backend == "ray":  # the actors load and run the models (docs/ray.md)
        from seallm.runtime.ray import ray_runtime

        if models is None:  # here only to tokenize: on the CPU, whatever the actors' device
            server = dataclasses.replace(settings.server, device="cpu")
            models = load_models(dataclasses.replace(settings, server=server), announce)
        runtime: LiveRuntime = ray_runtime(settings, models, announce=announce)
    else:
        if models is None:
            models = load_models(settings, announce)
        controller = live_controller(
            settings.config,
            settings.system,
            models,
            settings.kv_bytes,
            executor_factory or torch_executor_factory(settings.server.device),
            measured_cost(settings),
        )
        log = settings.server.step_log
        step_log = open(log, "a", buffering=1) if log else None  # noqa: SIM115 (server-long)
        runtime = LiveRuntime(controller, settings.server.max_queue, step_log=step_log)
    app = create_app(runtime, models, settings.server.drain_s, settings.server.max_body_mb)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=log_level,
        timeout_graceful_shutdown=int(settings.server.drain_s) + 10,
        lifespan="on",
    )
    return SeallmServer(config, runtime, settings.server.drain_s, announce, app)


class ServerThread:
    """A server running in a background thread of this process (tests, notebooks): real
    HTTP on a free loopback port, stopped (and drained) by `stop`."""

    def __init__(self, server: SeallmServer) -> None:
        import threading

        self.server = server
        self.thread = threading.Thread(target=server.run, name="seallm-server", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while server.port is None:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{server.port}"

    @property
    def runtime(self) -> LiveRuntime:
        return self.server.runtime

    def stop(self, timeout: float = 60.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def measured_cost(settings: ServeSettings):
    """The cost model of `server.profile` (None: the roofline)."""
    if settings.server.profile is None:
        return None
    from seallm.profiled import Profile, ProfiledCostModel

    profile = Profile.load(settings.server.profile)  # ValueError names the file
    return ProfiledCostModel(settings.config.cluster.device_spec, profile)
