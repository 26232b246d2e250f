"""Bring your own profile: iteration times fitted to measurements of the real engine.

`seallm profile` times the real engine's prefill and decode iterations over batch sizes and
context lengths and writes them to a JSON file. This module fits, per model, the same shape of
function the roofline cost model computes,

    t = c0 + c_p·[prefill] + c_t·prefill_tokens + c_q·Σ prompt² + c_d·[decode]
        + c_n·n_decode + c_c·Σ decode context,

by non-negative least squares on relative error, and serves it behind the `ModelCost` and
`CostModel` interfaces, so the simulator (`SimExecutor`, placement, profiles) runs on measured
times instead of the roofline. Model-load and KV-swap times, which a profile does not measure,
stay the roofline's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from seallm.costmodel import CostModel
from seallm.specs import DeviceSpec, ModelSpec

FEATURES = ("c0", "prefill", "prefill_tokens", "prefill_sq", "decode", "n_decode", "ctx_sum")


@dataclass
class Measurement:
    """One timed iteration: a prefill batch, a decode batch, or both."""

    prefill_tokens: int
    prefill_sq_sum: float
    n_decode: int
    decode_ctx_sum: int
    seconds: float

    def features(self) -> list[float]:
        return [
            1.0,
            float(self.prefill_tokens > 0),
            float(self.prefill_tokens),
            float(self.prefill_sq_sum),
            float(self.n_decode > 0),
            float(self.n_decode),
            float(self.decode_ctx_sum),
        ]


@dataclass
class ModelProfile:
    model: str
    tp: int
    measurements: list[Measurement] = field(default_factory=list)
    coefficients: list[float] = field(default_factory=list)

    def fit(self) -> ModelProfile:
        x = np.array([m.features() for m in self.measurements])
        y = np.array([m.seconds for m in self.measurements])
        w = 1.0 / y  # relative error: small iterations count as much as large ones
        self.coefficients = _nnls(x * w[:, None], y * w).tolist()
        return self

    def predict(self, m: Measurement) -> float:
        return float(np.dot(self.coefficients, m.features()))


@dataclass
class Profile:
    device: str
    profiles: list[ModelProfile]
    meta: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        try:
            doc = json.loads(Path(path).read_text())
            profiles = [
                ModelProfile(
                    p["model"],
                    int(p["tp"]),
                    [Measurement(**m) for m in p["measurements"]],
                    list(p.get("coefficients") or []),
                )
                for p in doc["profiles"]
            ]
            prof = cls(doc["device"], profiles, doc.get("meta", {}))
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a seallm profile ({err})") from err
        for p in prof.profiles:
            if len(p.coefficients) != len(FEATURES):
                p.fit()
        return prof


def profile_from_steps(
    paths: str | Path | Sequence[str | Path],
    device: str,
    model_of: dict[str, str],
    wall: bool = True,
) -> Profile:
    """A profile fitted to live servers' step logs (`server.step_log`; one path or several):
    each step's wall seconds as served (`wall`: host work and contention from the HTTP side
    included) or its executor seconds. `model_of` maps the logs' service names to models."""
    paths = [paths] if isinstance(paths, str | Path) else list(paths)
    by_model: dict[str, list[Measurement]] = {}
    for path in paths:
        _read_steps(Path(path), model_of, wall, by_model)
    if not by_model:
        raise ValueError(f"{', '.join(map(str, paths))}: no single-iteration steps to fit")
    profiles = [ModelProfile(name, 1, ms).fit() for name, ms in sorted(by_model.items())]
    names = ", ".join(Path(p).name for p in paths)
    return Profile(device, profiles, {"source": f"step log {names}", "wall": wall})


def _read_steps(
    path: Path, model_of: dict[str, str], wall: bool, by_model: dict[str, list[Measurement]]
) -> None:
    try:
        for line in path.read_text().splitlines():
            st = json.loads(line)
            if st["iterations"] != 1:
                continue  # a fused run of decodes: not one iteration's shape
            m = Measurement(
                int(st["prefill_tokens"]),
                float(st["prefill_sq_sum"]),
                int(st["n_decode"]),
                int(st["decode_ctx_sum"]),
                float(st["step_s"] if wall else st["executor_s"]),
            )
            by_model.setdefault(model_of.get(st["service"], st["service"]), []).append(m)
    except (OSError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}: not a seallm step log ({err})") from err


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares (Lawson-Hanson): times only grow with work, so no
    coefficient may be negative. Columns are scaled to unit norm for conditioning."""
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    a = a / scale
    n = a.shape[1]
    passive = np.zeros(n, dtype=bool)
    x = np.zeros(n)
    for _ in range(3 * n):
        w = a.T @ (b - a @ x)
        if passive.all() or w[~passive].max() <= 1e-12:
            break
        passive[np.argmax(np.where(passive, -np.inf, w))] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
        x = z
    return x / scale


class ProfiledModelCost:
    """A `ModelCost` with measured iteration times (same methods the simulator calls)."""

    def __init__(self, model: ModelSpec, tp: int, profile: ModelProfile) -> None:
        self.model, self.tp = model, tp
        c0, cp, ct, cq, cd, cn, cc = profile.coefficients
        self._c = (c0, cp, ct, cq, cd, cn, cc)

    def iteration_time(
        self, prefill_tokens: int, prefill_sq_sum: float, n_decode: int, decode_ctx_sum: int
    ) -> float:
        if prefill_tokens + n_decode <= 0:
            return 0.0
        c0, cp, ct, cq, cd, cn, cc = self._c
        t = c0
        if prefill_tokens > 0:
            t += cp + ct * prefill_tokens + cq * prefill_sq_sum
        if n_decode > 0:
            t += cd + cn * n_decode + cc * decode_ctx_sum
        return t

    def decode_times(self, n_decode: int, ctx_sum: int, k: int) -> np.ndarray:
        if k <= 0 or n_decode <= 0:
            return np.zeros(max(k, 0))
        c0, _, _, _, cd, cn, cc = self._c
        ctx = ctx_sum + n_decode * np.arange(k, dtype=np.float64)
        return c0 + cd + cn * n_decode + cc * ctx

    def prefill_time(self, prompt_tokens: int) -> float:
        return self.iteration_time(prompt_tokens, prompt_tokens * prompt_tokens, 0, 0)

    def standalone_latency(self, prompt_tokens: int, output_tokens: int) -> float:
        k = output_tokens - 1
        t = self.prefill_time(prompt_tokens)
        if k <= 0:
            return t
        c0, _, _, _, cd, cn, cc = self._c
        ctx_total = k * (prompt_tokens + 1) + k * (k - 1) / 2
        return t + k * (c0 + cd + cn) + cc * ctx_total


class ProfiledCostModel(CostModel):
    """A `CostModel` whose iteration times come from a measured profile for the models it
    holds (any model it does not hold falls back to the roofline, with a warning in `missing`)."""

    def __init__(self, device: DeviceSpec, profile: Profile) -> None:
        super().__init__(device)
        self.profile = profile
        self._measured = {(p.model, p.tp): p for p in profile.profiles}
        self.missing: set[tuple[str, int]] = set()

    def for_model(self, model: ModelSpec, tp: int):  # type: ignore[override]
        key = (model.name, tp)
        cost = self._cache.get(key)
        if cost is None:
            measured = self._measured.get(key)
            if measured is None:
                self.missing.add(key)
                return super().for_model(model, tp)
            cost = self._cache[key] = ProfiledModelCost(model, tp, measured)  # type: ignore[assignment]
        return cost
