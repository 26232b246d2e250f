"""What `seallm serve` serves: a deployment (Config), a system, and the server's own settings.

A serve YAML is a deployment config (`config.py`'s keys, or `preset: NAME`) plus two keys:

    preset: cpu-duo          # or the Config keys: name, cluster, services, workload, engine, ...
    system: seallm           # seallm | vllm | any name of systems.py
    server:
      host: 127.0.0.1
      port: 8000
      max_queue: 64          # per service: requests that may wait beyond a full batch; more: 429
      kv_pool_mb: 512        # the group's KV pool (the simulator sizes it from device memory)
      drain_s: 30            # on SIGTERM: seconds in-flight requests get to finish
      max_body_mb: 4         # the largest request body (MiB); a larger one gets a 413
      dtype: float32
      device: cpu
      models: {}             # service -> weights: a catalog name, a local folder, or tiny-llama /
                             # tiny-gemma3 (random weights, for tests); default the service's model
      backend: inprocess     # inprocess (one group, engine threads here) or ray (one Ray actor
                             # per group of the system's plan over the cluster; docs/ray.md)
      ray_address: null      # backend ray: auto, HOST:PORT or ray://HOST:PORT; null starts a
                             # local Ray cluster
      ray_max_restarts: 3    # backend ray: replacement actors per group after failures
      step_log: null         # a file: one JSON line per engine step (batch shape, executor and
                             # wall seconds), for simulator validation (docs/validation.md)
      profile: null          # a measured profile (seallm profile) for the scheduler's service
                             # profiles; default: the roofline of the cluster's device

Live serving runs one group on one device: every service shares it, whatever the system (the
`colocate` placement); the system picks the scheduler, the KV layout and the preemption.
With `backend: ray` the cluster may have any shape: the system's placement splits it into
groups, each served by a Ray actor (`runtime/ray.py`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seallm.config import Config, ConfigError, SystemSpec, config_from_dict, read_yaml
from seallm.presets import get_preset
from seallm.systems import get_system

DEFAULT_PRESET = "cpu-duo"
TINY_SOURCES = {"tiny-llama": "llama", "tiny-gemma3": "gemma3"}
BACKENDS = ("inprocess", "ray")


@dataclass
class ServerSpec:
    host: str = "127.0.0.1"
    port: int = 8000
    max_queue: int = 64
    kv_pool_mb: float = 512.0
    drain_s: float = 30.0
    # Bodies over this many MiB are refused (413). 4 MiB holds a full context of the default
    # models (32k tokens as text, or as token ids) several times over.
    max_body_mb: float = 4.0
    dtype: str = "float32"
    device: str = "cpu"
    models: dict[str, str] = field(default_factory=dict)
    backend: str = "inprocess"
    ray_address: str | None = None
    ray_max_restarts: int = 3
    step_log: str | None = None
    profile: str | None = None


@dataclass
class ServeSettings:
    config: Config
    system: SystemSpec
    server: ServerSpec = field(default_factory=ServerSpec)

    def source_of(self, service: str) -> str:
        """Where a service's weights come from (see the module docstring)."""
        return self.server.models.get(service) or self.config.service(service).model

    @property
    def kv_bytes(self) -> float:
        return self.server.kv_pool_mb * 1024 * 1024

    def validate(self) -> ServeSettings:
        c, s = self.config.cluster, self.server
        if s.backend not in BACKENDS:
            raise ConfigError(f"server.backend: {s.backend!r} is not one of {', '.join(BACKENDS)}")
        for name in ("step_log", "profile"):
            value = getattr(s, name)
            if value is not None and (s.backend != "inprocess" or not isinstance(value, str)):
                raise ConfigError(f"server.{name}: a file path, for backend: inprocess")
        if s.profile is not None:
            from seallm.profiled import Profile

            try:
                Profile.load(s.profile)
            except ValueError as err:
                raise ConfigError(f"server.profile: {err}") from err
        restarts = s.ray_max_restarts
        if s.backend == "ray":
            if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
                raise ConfigError(
                    f"server.ray_max_restarts must be an integer >= 0, got {restarts!r}"
                )
        elif s.ray_address is not None:
            raise ConfigError("server.ray_address is for backend: ray")
        elif c.num_nodes * c.gpus_per_node != 1:
            raise ConfigError(
                f"cluster: live serving runs one group on one device; got {c.num_nodes} node(s) "
                f"x {c.gpus_per_node} device(s)"
            )
        if not isinstance(s.port, int) or isinstance(s.port, bool) or not 0 <= s.port <= 65535:
            raise ConfigError(f"server.port must be an integer in [0, 65535], got {s.port!r}")
        for name in ("max_queue", "kv_pool_mb", "drain_s", "max_body_mb"):
            value = getattr(s, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"server.{name} must be a positive number, got {value!r}")
        if s.dtype not in ("float32", "bfloat16", "float16"):
            raise ConfigError(f"server.dtype: {s.dtype!r} is not one of bfloat16, float16, float32")
        services = {x.name for x in self.config.services}
        for name in s.models:
            if name not in services:
                raise ConfigError(
                    f"server.models.{name}: no such service; services are {', '.join(services)}"
                )
        return self


def default_settings(system: str = "seallm") -> ServeSettings:
    return ServeSettings(get_preset(DEFAULT_PRESET), get_system(system)).validate()


def settings_from_dict(data: dict[str, Any]) -> ServeSettings:
    data = dict(data)
    system = get_system(str(data.pop("system", "seallm")))
    server = data.pop("server", None) or {}
    if not isinstance(server, dict):
        raise ConfigError(f"server: expected a mapping, got {type(server).__name__}")
    names = {f.name for f in dataclasses.fields(ServerSpec)}
    unknown = sorted(set(server) - names)
    if unknown:
        raise ConfigError(f"server.{unknown[0]}: unknown key; valid keys are {', '.join(names)}")
    if not isinstance(server.get("models", {}), dict):
        raise ConfigError("server.models: expected a mapping of service -> weights")
    # `preset: NAME` plus deployment keys: the keys override the preset's (config.with_preset)
    config = config_from_dict(data) if data else get_preset(DEFAULT_PRESET)
    return ServeSettings(config, system, ServerSpec(**server)).validate()


def load_settings(path: str | Path, server: dict[str, Any] | None = None) -> ServeSettings:
    """The serve YAML at `path`; `server` overrides keys of its server section (command-line
    options) before it is checked, since some (backend) decide what is valid."""
    data = read_yaml(path)
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    data = dict(data or {})
    if server:
        section = data.get("server") or {}
        data["server"] = {**section, **server} if isinstance(section, dict) else section
    try:
        return settings_from_dict(data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
