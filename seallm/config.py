"""Deployment configuration: cluster, services, engine limits, workload; YAML in and out.

Every validation error names the offending field (as a dotted path) and, where the value must
come from a set, the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seallm.catalog import DEVICES, MODELS
from seallm.specs import DeviceSpec, ModelSpec
from seallm.workload import (
    TraceRecord,
    WorkloadError,
    WorkloadSpec,
    generate,
    get_length_distribution,
)


class ConfigError(ValueError):
    """An invalid configuration; the message names the field."""


@dataclass
class ClusterSpec:
    device: str = "a100-80gb"
    num_nodes: int = 1
    gpus_per_node: int = 8

    @property
    def num_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node

    @property
    def device_spec(self) -> DeviceSpec:
        return DEVICES[self.device]


@dataclass
class ServiceSpec:
    """One deployed model with its SLO. `weight` overrides power-law popularity; `lengths`
    overrides the workload's length distribution for this service's requests."""

    name: str
    model: str
    slo_scale: float = 5.0
    weight: float | None = None
    lengths: str | None = None

    @property
    def model_spec(self) -> ModelSpec:
        return MODELS[self.model]


@dataclass
class EngineSpec:
    """Limits of one group engine (vLLM's defaults where it has one)."""

    max_batch_size: int = 256
    max_batched_tokens: int = 8192
    memory_utilization: float = 0.9  # fraction of device memory for weights + KV
    min_kv_fraction: float = 0.1  # placement keeps at least this much of a group's memory for KV
    block_tokens: int = 16  # static (per-model) KV block size, vLLM's default
    page_bytes: int = 2 * 1024 * 1024  # unified KV page size per device
    max_fused_iterations: int = 256  # simulator only: identical decode iterations fused in one step
    ageing_s: float = 30.0  # priority schedulers: a request waiting this long runs next
    # Rounds: another model's decode joins a round while it slows the round's
    # highest-priority job by at most this fraction (inf: always; 0: only when free).
    round_join_slowdown: float = math.inf
    # Rounds: prompt tokens prefilled per round at most (a longer prompt runs alone). A round
    # lasts as long as its longest job, so a long prefill stalls every joined decode; smaller
    # prefill batches keep those stalls short (measured in docs/results.md).
    round_prefill_tokens: int = 2048
    swap_bytes_per_gpu: float = 4 * 1024**3  # host memory for swapped KV (vLLM's swap_space)
    # A fixed KV pool per group in bytes (what a live server is given), instead of what the
    # weights leave of the devices' memory; None: derived from memory.
    kv_pool_bytes: float | None = None


@dataclass
class ReplacementSpec:
    """Re-placement while serving, for systems with a replacement policy (placement/
    replacement.py): the service monitor's window, the check intervals, and how moves are
    made and costed."""

    window_s: float = 120.0  # service monitor: sliding window of arrivals and finishes
    recent_s: float = 30.0  # adaptive: the latest part of the window, to see a shift early
    first_check_s: float = 120.0  # adaptive: the first interval (and the first check)
    min_interval_s: float = 30.0  # adaptive: the interval shrinks no lower while traffic drifts
    max_interval_s: float = 960.0  # adaptive: ...and grows no higher while it is stable
    fixed_interval_s: float = 300.0  # the fixed-interval policy's interval
    drift_threshold: float = 0.15  # relative change of the rate mix, beyond noise, that is drift
    gain_margin: float = 1.0  # adaptive: re-place when estimated gain > margin x move cost
    load_source: str = "host"  # model weights load from "host" memory or "disk"
    on_move: str = "migrate"  # requests of a re-placed group: "migrate" or "drain"


@dataclass(frozen=True)
class SystemSpec:
    """A named serving system: which placement, scheduler, KV layout and replacement policy.
    The registry of named systems is `systems.py`."""

    name: str
    placement: str
    scheduler: str
    kv: str  # "static" (per-model partitions) or "unified" (one shared pool)
    preemption: str = "recompute"  # or "cost": swap or recompute, whichever is cheaper
    replacement: str | None = None
    description: str = ""
    # How a group runs its co-located models (ENGINES): "temporal" (one model per step),
    # "rounds" (every model may join a step's round, seallm), "spatial" (MuxServe's MPS
    # processes under SM shares), "spatial-ideal" (its fluid upper bound).
    engine: str = "temporal"
    # Which arriving requests a group accepts: "all", or "slo-drop" (AlpaServe's: drop one
    # predicted to miss its SLO; placement/alpaserve_admission.py).
    admission: str = "all"


ENGINES = ("temporal", "rounds", "spatial", "spatial-ideal")


@dataclass
class Config:
    name: str = "custom"
    cluster: ClusterSpec = field(default_factory=ClusterSpec)
    services: list[ServiceSpec] = field(default_factory=list)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    engine: EngineSpec = field(default_factory=EngineSpec)
    duration_s: float = 600.0
    drain_s: float | None = None  # after the last arrival; default max(60, duration / 4)
    seed: int = 0
    slo_target: float = 0.9  # Δ: placement keeps each service's estimated SLO attainment >= Δ
    # Two-stage placement: its best `placement_finalists` plans by estimate (plus the
    # dedicated and muxserve plans) are each simulated on this many seconds of the expected
    # workload, and the best simulated plan wins (0: the estimate decides alone).
    placement_check_s: float = 20.0
    placement_finalists: int = 2
    replacement: ReplacementSpec = field(default_factory=ReplacementSpec)

    def lengths_of(self, service: str) -> str:
        """The length distribution of a service's requests."""
        return self.service(service).lengths or self.workload.lengths

    def records(self, rate_scale: float = 1.0) -> list[TraceRecord]:
        """This deployment's workload: generated (or replayed) requests over duration_s."""
        return generate(
            self.workload,
            [(s.name, s.weight) for s in self.services],
            self.duration_s,
            self.seed,
            rate_scale,
            {s.name: s.lengths for s in self.services if s.lengths},
        )

    def service(self, name: str) -> ServiceSpec:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)

    def validate(self) -> Config:
        c = self.cluster
        _choice("cluster.device", c.device, DEVICES)
        _positive("cluster.num_nodes", c.num_nodes)
        _positive("cluster.gpus_per_node", c.gpus_per_node)
        if c.gpus_per_node & (c.gpus_per_node - 1):
            raise ConfigError(
                f"cluster.gpus_per_node must be a power of two, got {c.gpus_per_node}"
            )
        if not self.services:
            raise ConfigError("services: at least one service is required")
        seen: set[str] = set()
        for i, s in enumerate(self.services):
            if not s.name or s.name in seen:
                raise ConfigError(f"services[{i}].name: {s.name!r} is empty or repeated")
            seen.add(s.name)
            _choice(f"services[{i}].model", s.model, MODELS)
            _positive(f"services[{i}].slo_scale", s.slo_scale)
            if s.weight is not None and s.weight < 0:
                raise ConfigError(f"services[{i}].weight must be >= 0, got {s.weight}")
            if s.lengths is not None:
                try:
                    get_length_distribution(s.lengths)
                except WorkloadError as err:
                    raise ConfigError(f"services[{i}].lengths: {err}") from err
        e = self.engine
        for f in dataclasses.fields(e):
            if getattr(e, f.name) is not None and f.name != "round_join_slowdown":
                _positive(f"engine.{f.name}", getattr(e, f.name))  # None: a limit left unset
        if not e.round_join_slowdown >= 0:
            raise ConfigError(
                f"engine.round_join_slowdown must be >= 0, got {e.round_join_slowdown}"
            )
        if not 0 < e.memory_utilization <= 1:
            raise ConfigError(
                f"engine.memory_utilization must be in (0, 1], got {e.memory_utilization}"
            )
        _positive("duration_s", self.duration_s)
        rp = self.replacement
        for f in dataclasses.fields(rp):
            if f.name not in ("load_source", "on_move"):
                _positive(f"replacement.{f.name}", getattr(rp, f.name))
        _choice("replacement.load_source", rp.load_source, {"host": 0, "disk": 0})
        _choice("replacement.on_move", rp.on_move, {"migrate": 0, "drain": 0})
        if rp.min_interval_s > rp.max_interval_s:
            raise ConfigError(
                f"replacement.min_interval_s ({rp.min_interval_s}) exceeds "
                f"replacement.max_interval_s ({rp.max_interval_s})"
            )
        if not 0 <= self.slo_target <= 1:
            raise ConfigError(f"slo_target must be in [0, 1], got {self.slo_target}")
        if not self.placement_check_s >= 0:
            raise ConfigError(f"placement_check_s must be >= 0, got {self.placement_check_s}")
        if not (isinstance(self.placement_finalists, int) and self.placement_finalists >= 1):
            raise ConfigError(
                f"placement_finalists must be an integer >= 1, got {self.placement_finalists}"
            )
        try:
            self.workload.validate()
        except WorkloadError as err:
            raise ConfigError(str(err)) from err
        return self

    @property
    def drain_seconds(self) -> float:
        return self.drain_s if self.drain_s is not None else max(60.0, self.duration_s / 4)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _choice(path: str, value: str, choices: dict[str, Any]) -> None:
    if value not in choices:
        raise ConfigError(f"{path}: {value!r} is not one of {', '.join(sorted(choices))}")


def _positive(path: str, value: float) -> None:
    if not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{path} must be a positive number, got {value!r}")


def _build(cls: type, data: Any, path: str) -> Any:
    """Instantiate a dataclass from a mapping, rejecting unknown keys by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ConfigError(
            f"{path + '.' if path else ''}{sorted(unknown)[0]}: unknown key; "
            f"valid keys are {', '.join(names)}"
        )
    return cls(**data)


# Sections that `preset: NAME` plus overrides merge key by key (one level deep); any other key
# given with a preset (services, duration_s, ...) replaces the preset's.
MERGED_SECTIONS = ("cluster", "engine", "workload", "replacement")


def with_preset(data: dict[str, Any]) -> dict[str, Any]:
    """`preset: NAME` plus deployment keys: the preset's config as a mapping, with the given
    keys overriding it (the sections of MERGED_SECTIONS merged key by key, `services` and the
    others replaced). Without `preset`, `data` unchanged."""
    if "preset" not in data:
        return data
    from seallm.presets import get_preset  # presets builds on this module

    data = dict(data)
    merged = get_preset(str(data.pop("preset"))).to_dict()
    for key, value in data.items():
        if key in MERGED_SECTIONS and isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def config_from_dict(data: dict[str, Any]) -> Config:
    """A validated Config from a mapping of Config's keys, or `preset: NAME` plus any of them
    as overrides (`with_preset`)."""
    data = dict(with_preset(data))
    try:
        if "cluster" in data:
            data["cluster"] = _build(ClusterSpec, data["cluster"], "cluster")
        if "engine" in data:
            data["engine"] = _build(EngineSpec, data["engine"], "engine")
        if "workload" in data:
            wl = dict(data["workload"])
            if "rate_schedule" in wl:
                wl["rate_schedule"] = [tuple(p) for p in wl["rate_schedule"]]
            if "bursts" in wl:
                wl["bursts"] = [tuple(b) for b in wl["bursts"]]
            data["workload"] = _build(WorkloadSpec, wl, "workload")
        if "replacement" in data:
            data["replacement"] = _build(ReplacementSpec, data["replacement"], "replacement")
        if "services" in data:
            if not isinstance(data["services"], list):
                raise ConfigError("services: expected a list of services")
            data["services"] = [
                _build(ServiceSpec, s, f"services[{i}]") for i, s in enumerate(data["services"])
            ]
        cfg = _build(Config, data, "")
    except TypeError as err:  # a required key is missing
        raise ConfigError(str(err)) from err
    return cfg.validate()


def read_yaml(path: str | Path) -> Any:
    """The YAML document at `path`, or a ConfigError that names the file."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err


def load_config(path: str | Path) -> Config:
    data = read_yaml(path)
    try:
        return config_from_dict(data or {})
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def dump_config(cfg: Config) -> str:
    data = cfg.to_dict()
    data["workload"]["rate_schedule"] = [list(p) for p in data["workload"]["rate_schedule"]]
    data["workload"]["bursts"] = [list(b) for b in data["workload"]["bursts"]]
    return yaml.safe_dump(data, sort_keys=False)
