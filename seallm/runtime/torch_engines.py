"""Group engines over real models, for the live runtime.

The same GroupEngine, schedulers and KV caches as the simulator's (`runtime/sim.py`), with
three differences: the executor runs the models (TorchExecutor), the KV pool has the size the
server is given (the simulator derives it from a GPU's memory), and its pages are sized for the
loaded models' real shapes and dtype. Live serving has one device, so the placement is one
group holding every service (`colocate`) whatever the system; the system still chooses the
scheduler, the KV layout (unified or static partitions) and the preemption.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from seallm.colocation import round_pricer
from seallm.config import Config, ConfigError, SystemSpec
from seallm.controller import Controller
from seallm.costmodel import CostModel
from seallm.engine import GroupEngine
from seallm.executor.base import Executor
from seallm.kvcache import PagedKVCache
from seallm.placement import service_loads
from seallm.placement.colocate import place_colocated
from seallm.placement.plan import GroupPlan
from seallm.profile import service_profiles
from seallm.runtime.sim import group_kv
from seallm.scheduling import make_scheduler

if TYPE_CHECKING:
    from seallm.models.loader import LoadedModel

ExecutorFactory = Callable[[dict[str, "LoadedModel"], PagedKVCache], Executor]


def torch_executor_factory(device: str = "cpu") -> ExecutorFactory:
    def build(models: dict[str, LoadedModel], kv: PagedKVCache) -> Executor:
        from seallm.executor.torch import TorchExecutor

        return TorchExecutor(models, kv, device=device)

    return build


LIVE_ENGINES = ("temporal", "rounds")


def check_live_engine(system: SystemSpec) -> None:
    """Live engines run one model after another or in rounds; MuxServe's spatial sharing
    (one process per job under MPS) exists in the simulator only."""
    if system.engine not in LIVE_ENGINES:
        raise ConfigError(
            f"system {system.name!r}: engine {system.engine!r} runs in the simulator only; "
            f"live serving runs {' or '.join(LIVE_ENGINES)} engines"
        )


def live_group_engine(
    config: Config,
    system: SystemSpec,
    group: GroupPlan,
    models: dict[str, LoadedModel],
    kv_pool_bytes: float,
    make_executor: ExecutorFactory,
    cost: CostModel | None = None,
) -> GroupEngine:
    """The GroupEngine of one planned group over real models (in-process or in a Ray actor).
    `cost` prices iterations for the scheduler's service profiles: a measured profile
    (`server.profile`) or, by default, the roofline of the cluster's device."""
    cost = cost or CostModel(config.cluster.device_spec)
    specs = {s: models[s].spec for s in group.services}
    kv = group_kv(system, group, specs, kv_pool_bytes, config)
    costs = {s: cost.for_model(m, group.size) for s, m in specs.items()}
    profiles = service_profiles(config, costs)
    check_live_engine(system)
    rounds = round_pricer(cost, specs, group.size) if system.engine == "rounds" else None
    return GroupEngine(
        group.id,
        specs,
        group.size,
        make_scheduler(system.scheduler, profiles, config.engine, rounds),
        kv,
        make_executor({s: models[s] for s in group.services}, kv),
        config.engine,
        profiles,
        preemption=system.preemption,
        fuse=False,  # one token per step, so that every token streams when sampled
        swap_time=lambda r: cost.swap_time(specs[r.service], group.size, r.context_tokens),
    )


def live_controller(
    config: Config,
    system: SystemSpec,
    models: dict[str, LoadedModel],
    kv_pool_bytes: float,
    executor_factory: ExecutorFactory | None = None,
    cost: CostModel | None = None,
) -> Controller:
    """A Controller whose single group serves `models` (service name -> loaded model)."""
    missing = [s.name for s in config.services if s.name not in models]
    if missing:
        raise ValueError(f"no loaded model for service(s) {', '.join(missing)}")
    make_executor = executor_factory or torch_executor_factory()
    cost = cost or CostModel(config.cluster.device_spec)

    def build(group: GroupPlan) -> GroupEngine:
        return live_group_engine(config, system, group, models, kv_pool_bytes, make_executor, cost)

    plan = place_colocated(config, cost, service_loads(config))
    return Controller(config, system, cost, build, plan=plan, record=False)
