"""Would AlpaServe's pipeline-parallel configurations matter for paper32? (the figures of the
docstring of seallm/placement/alpaserve.py)

    python scripts/check_alpaserve_pp.py [--preset paper32] [--simulate] [--rates 1,2]

AlpaServe (alpa_serve/placement_policy/model_parallelism.py, `enumerate_group_configs`)
splits each group of g GPUs as pp pipeline stages x op-way intra-op (tensor) parallelism, for
every factor pp of g (max_pp 8, max_op 4 by default), and keeps the configuration whose
simulated SLO attainment is highest. Its `compute_capability` counts the requests a replica
serves within the SLO from the stages' latencies: their sum is a request's latency, their
max the pipeline's period.

`PipelinedCost` prices pp x tp from seallm's tensor-parallel cost model (costmodel.py), with
the ModelCost interface the simulator uses:
- a stage is the model with num_layers / pp layers on tp GPUs (the bottleneck, last, stage
  holds the LM head; each stage pays the engine's step overhead);
- one pass of a batch through every stage = the whole model on tp GPUs + (pp - 1) x (a step
  overhead + the activations' transfer to the next stage over NVLink);
- an iteration (every sequence of the batch advances one token) runs as m = min(pp,
  sequences) micro-batches in flight: max(one pass of a micro-batch, m x a stage's time on
  it). The same for prefill (prompts split over micro-batches) and decode. The engine runs
  one iteration at a time, so consecutive iterations do not overlap in the pipeline (a lone
  prompt's prefill is one pass): "micro" pricing, what a vLLM-like engine with one batch in
  flight gets from PP;
- "ideal" pricing, an upper bound on any pipelined engine: every iteration's work split into
  pp equal micro-batches (fractions of a sequence allowed), no transfers: pp x a stage's time
  on 1/pp of the work, i.e. the pipeline always full.

The table gives, for every paper32 model on every group it fits in: the decode token latency
(ms) at batch 1/8/32/64 (context 576), the prefill of 512 tokens (ms), the decode throughput
at batch 64 (tokens/s) and the capability (requests/s within the SLO, AlpaServe's
`compute_capability` with batching): at the service's mean lengths, over every concurrency B
the group's KV holds, a cohort of B requests takes its B prefills (max_batched_tokens per
iteration) + `mean output` decode iterations at batch B; latency = that time, which must be
within slo_scale x the standalone latency on the model's smallest group (the metrics' SLO);
throughput = B / latency.

`--simulate` then runs AlpaServe's own selection: for each uniform partition of the
cluster (the alpaserve placement's candidates, `uniform_plans`), every pp x tp split of its
groups, simulated on the preset's workload (seed 5) at each rate; the highest SLO attainment
is what AlpaServe would pick.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import replace

import numpy as np

from seallm.config import Config
from seallm.costmodel import CostModel, ModelCost
from seallm.metrics import summarize
from seallm.placement import service_loads
from seallm.placement.alpaserve import uniform_plans
from seallm.placement.demand import kv_bytes, min_group_size
from seallm.presets import get_preset
from seallm.specs import ModelSpec

BATCHES = (1, 8, 32, 64)
PREFILL = 512
CONTEXT = 576  # decode rows: prefill 512 + 64 generated


class PipelinedCost:
    """pp stages x tp GPUs of one model (see the module docstring); ModelCost's interface."""

    def __init__(
        self, cost: CostModel, model: ModelSpec, pp: int, tp: int, ideal: bool = False
    ) -> None:
        if model.num_layers % pp:
            raise ValueError(f"{model.name}: {model.num_layers} layers do not split into {pp}")
        self.model, self.pp, self.tp, self.ideal = model, pp, tp, ideal
        self.full = cost.for_model(model, tp)
        self.stage = ModelCost(
            replace(model, num_layers=model.num_layers // pp), cost.device, cost.calibration, tp
        )
        cal, dev = cost.calibration, cost.device
        self.hop = cal.iteration_overhead + cal.allreduce_latency  # per extra stage
        self.hop_token = (
            model.hidden_size
            * model.dtype_bytes
            / (dev.intra_node_bandwidth * cal.allreduce_bw_eff)
        )

    def _hops(self, tokens: float) -> float:
        return (self.pp - 1) * (self.hop + tokens * self.hop_token)

    def iteration_time(
        self, prefill_tokens: float, prefill_sq_sum: float, n_decode: float, decode_ctx_sum: float
    ) -> float:
        if prefill_tokens <= 0 and n_decode <= 0:
            return 0.0
        if self.ideal and self.pp > 1:  # pp equal micro-batches of any work, no hop
            f = 1.0 / self.pp
            x = (prefill_tokens * f, prefill_sq_sum * f, n_decode * f, decode_ctx_sum * f)
            return self.pp * self.stage.iteration_time(*x)
        prompts = prefill_tokens * prefill_tokens / prefill_sq_sum if prefill_sq_sum > 0 else 0
        m = max(1, min(self.pp, math.floor(prompts + 1e-9) + int(n_decode)))
        x = (prefill_tokens / m, prefill_sq_sum / m, n_decode / m, decode_ctx_sum / m)
        one = self.full.iteration_time(*x) + self._hops(x[0] + x[2])
        return max(one, m * self.stage.iteration_time(*x)) if m > 1 else one

    def decode_times(self, n_decode: int, ctx_sum: int, k: int) -> np.ndarray:
        if k <= 0 or n_decode <= 0:
            return np.zeros(max(k, 0))
        if self.ideal and self.pp > 1:
            return self.pp * self.stage.decode_times(n_decode / self.pp, ctx_sum / self.pp, k)
        m = max(1, min(self.pp, n_decode))
        b, c = n_decode / m, ctx_sum / m
        one = self.full.decode_times(b, c, k) + self._hops(b)
        return np.maximum(one, m * self.stage.decode_times(b, c, k)) if m > 1 else one

    def prefill_time(self, prompt_tokens: int) -> float:
        return self.iteration_time(prompt_tokens, prompt_tokens * prompt_tokens, 0, 0)

    def standalone_latency(self, prompt_tokens: int, output_tokens: int) -> float:
        hops = self._hops(prompt_tokens) + max(0, output_tokens - 1) * self._hops(1)
        return self.full.standalone_latency(prompt_tokens, output_tokens) + hops


class PipelineCostModel(CostModel):
    """Every group of `size` GPUs priced as pp x (size / pp) (TP where pp does not divide)."""

    def __init__(self, base: CostModel, pp: int, ideal: bool = False) -> None:
        super().__init__(base.device, base.calibration)
        self.pp, self.ideal = pp, ideal
        self.tensor = CostModel(base.device, base.calibration)  # the stages' own pricing

    def for_model(self, model: ModelSpec, tp: int):  # a ModelCost look-alike for pp > 1
        if self.pp == 1 or tp % self.pp or model.num_layers % self.pp:
            return super().for_model(model, tp)
        key = (f"{model.name}/pp{self.pp}", tp)
        if key not in self._cache:
            self._cache[key] = PipelinedCost(self.tensor, model, self.pp, tp // self.pp, self.ideal)  # type: ignore[assignment]
        return self._cache[key]


def capability(
    cost: PipelinedCost, prompt: int, output: int, slo_s: float, max_b: int, max_tokens: int
) -> tuple[float, int]:
    """(requests/s within the SLO, the concurrency that achieves it)."""
    ctx = prompt + output // 2
    per_iter = max(1, max_tokens // prompt)  # prompts per prefill iteration
    chunk = cost.iteration_time(per_iter * prompt, per_iter * prompt * prompt, 0, 0) / per_iter
    best = (0.0, 0)
    for b in range(1, max_b + 1):
        pf = b * chunk if b >= per_iter else cost.iteration_time(b * prompt, b * prompt**2, 0, 0)
        latency = pf + output * cost.iteration_time(0, 0.0, b, b * ctx)
        if latency > slo_s:
            break
        best = max(best, (b / latency, b))
    return best


def table(config: Config, slo_scale: float) -> list[tuple[str, int, float, float, int]]:
    cost = CostModel(config.cluster.device_spec)
    loads = service_loads(config)
    models: dict[str, tuple[ModelSpec, int, int]] = {}
    for ld in loads.values():
        models.setdefault(ld.model.name, (ld.model, round(ld.mean_prompt), round(ld.mean_output)))
    print(
        f"{'model':<15}{'g':>3} {'pp x tp':<8}"
        + "".join(f"{'tok@' + str(b):>8}" for b in BATCHES)
        + f"{'pf512':>8}{'tok/s@64':>10}{'cap r/s':>9}{'@B':>5}"
    )
    summary = []
    for name, (model, prompt, output) in models.items():
        smallest = min_group_size(model, config)
        if smallest is None:
            continue
        slo_s = slo_scale * cost.for_model(model, smallest).standalone_latency(prompt, output)
        g = smallest
        while g <= config.cluster.gpus_per_node:
            kv = kv_bytes([model], g, config)
            caps = {}
            for pp in (p for p in range(1, g + 1) if g % p == 0 and model.num_layers % p == 0):
                tp = g // pp
                pc = PipelinedCost(cost, model, pp, tp)
                per_token = model.kv_bytes_per_token * max(1, tp // model.num_kv_heads)
                max_b = int(min(config.engine.max_batch_size, kv / per_token / (prompt + output)))
                cap, at = capability(
                    pc, prompt, output, slo_s, max(1, max_b), config.engine.max_batched_tokens
                )
                caps[pp] = cap
                print(
                    f"{name:<15}{g:>3} {f'{pp} x {tp}':<8}"
                    + "".join(
                        f"{1e3 * pc.iteration_time(0, 0.0, b, b * CONTEXT):>8.2f}" for b in BATCHES
                    )
                    + f"{1e3 * pc.prefill_time(PREFILL):>8.1f}"
                    + f"{64 / pc.iteration_time(0, 0.0, 64, 64 * CONTEXT):>10.0f}"
                    + f"{cap:>9.2f}{at:>5}"
                )
            best_pp = max((p for p in caps if p > 1), key=caps.__getitem__, default=1)
            summary.append((name, g, caps[1], caps[best_pp], best_pp))
            g *= 2
    print(f"\n{'model':<15}{'g':>3}{'TP cap':>9}{'best PP cap':>13}{'(pp)':>6}{'PP / TP':>9}")
    for name, g, tp_cap, pp_cap, pp in summary:
        if g > 1:
            print(f"{name:<15}{g:>3}{tp_cap:>9.2f}{pp_cap:>13.2f}{pp:>6}{pp_cap / tp_cap:>9.2f}")
    return summary


def simulate_selection(config: Config, rates: list[float]) -> None:
    import seallm.runtime.sim as sim
    from seallm.systems import get_system

    system = get_system("alpaserve")
    slo = {s.name: s.slo_scale for s in config.services}
    base = CostModel(config.cluster.device_spec)
    factory = sim.sim_engine_factory
    print(
        f"\n{'rate':>5}{'g':>3}{'pp x tp':>9}{'pricing':>9}{'SLO':>8}{'dropped':>9}"
        f"{'norm lat':>10}{'TTFT':>7}{'TPOT ms':>9}"
    )
    for rate in rates:
        records = config.records(rate)
        runs = []
        for g, plan in uniform_plans(config, base, service_loads(config, rate)):
            splits = [(p, m) for p in range(1, g + 1) if g % p == 0 for m in (False, True)]
            for pp, ideal in splits:
                if pp == 1 and ideal:
                    continue
                piped = PipelineCostModel(base, pp, ideal)
                # Only the groups' engines are pipelined: the SLO's reference stays TP.
                sim.sim_engine_factory = lambda c, s, _, f=True, p=piped: factory(c, s, p, f)
                try:
                    res = sim.simulate(config, system, records, base, rate, plan=plan)
                finally:
                    sim.sim_engine_factory = factory
                row = summarize(res.requests, slo, res.end_time, system.name)
                runs.append((row.slo_attainment, g, pp, ideal))
                pricing = "-" if pp == 1 else ("ideal" if ideal else "micro")
                print(
                    f"{rate:>4g}x{g:>3}{f'{pp} x {g // pp}':>9}{pricing:>9}"
                    f"{row.slo_attainment:>8.3f}{row.rejected:>9}"
                    f"{row.mean_normalized_latency:>10.4f}{row.mean_ttft:>7.2f}"
                    f"{1e3 * row.mean_tpot:>9.2f}",
                    flush=True,
                )
        met, g, pp, ideal = max(runs)
        how = " (ideal pricing)" if ideal else ""
        print(f"rate x{rate:g}: AlpaServe's selection picks g={g}, pp={pp}{how}: SLO {met:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper32")
    ap.add_argument("--slo-scale", type=float, default=5.0)
    ap.add_argument("--simulate", action="store_true", help="run AlpaServe's selection")
    ap.add_argument("--rates", default="1,2")
    ap.add_argument("--duration", type=float, default=300.0)
    args = ap.parse_args()
    config = get_preset(args.preset)
    table(config, args.slo_scale)
    if args.simulate:
        config = dataclasses.replace(config, duration_s=args.duration, seed=5)
        simulate_selection(config, [float(r) for r in args.rates.split(",")])


if __name__ == "__main__":
    main()
