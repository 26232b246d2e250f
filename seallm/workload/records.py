"""The workload's data types: one request of a trace, the error readers raise, and the spec
that describes a generated (or replayed) multi-service workload."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ARRIVALS = ("poisson", "gamma", "onoff", "trace")


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One request: when it arrives, which service it is for, and its token counts."""

    arrival_s: float  # seconds from the start of the workload (first record of a trace at 0.0)
    service: str  # "" when the source format has no model/service column
    prompt_tokens: int
    output_tokens: int


class WorkloadError(ValueError):
    """A malformed trace row or workload spec. Trace errors read `path:line: reason`."""


def _num(x: object) -> str:
    # "-1" rather than "-1.0": messages quote what the user most likely wrote.
    return f"{x:g}" if isinstance(x, float) else repr(x)


@dataclass
class WorkloadSpec:
    """How requests arrive over all services and how long they are."""

    arrival: str = "gamma"  # "poisson" | "gamma" | "onoff" | "trace"
    rate: float = 10.0  # total requests/s over all services, before rate_scale
    cv: float = 1.0  # gamma inter-arrival coefficient of variation; poisson == gamma cv 1
    alpha: float = 1.0  # popularity: rate_i ∝ (i+1)^-alpha unless service weights are given
    lengths: str = "azure-conv"  # built-in length distribution name, or a trace path
    trace: str | None = None  # arrival == "trace": replay this trace's arrivals
    on_s: float = 10.0  # onoff: seconds on, then off_s seconds with no arrivals
    off_s: float = 10.0
    # piecewise-constant multiplier of the rate: [(t_s, multiplier), ...], each from t_s on
    rate_schedule: list[tuple[float, float]] = field(default_factory=list)
    max_prompt_tokens: int = 4096  # clip sampled prompts; prompt+output also fits this total
    max_output_tokens: int = 2048
    # Time-varying popularity (shifting.py): at each of shift_times, and every shift_period_s
    # seconds (0: never), the popularity order rotates by shift_step services.
    shift_period_s: float = 0.0
    shift_times: list[float] = field(default_factory=list)
    shift_step: int = 1
    # Per-service bursts of generated arrivals: [(start_s, duration_s, multiplier, service), ...];
    # service "" multiplies every service.
    bursts: list[tuple[float, float, float, str]] = field(default_factory=list)

    def validate(self) -> None:
        """Raise WorkloadError naming the first bad field and what would be valid."""
        if self.arrival not in ARRIVALS:
            raise WorkloadError(
                f"workload.arrival: {self.arrival!r} is not one of {', '.join(ARRIVALS)}"
            )
        _check_number("rate", self.rate, lo=0.0)
        _check_number("cv", self.cv, lo=0.0, strict=True)
        _check_number("alpha", self.alpha, lo=0.0)
        _check_number("on_s", self.on_s, lo=0.0, strict=True)
        _check_number("off_s", self.off_s, lo=0.0)
        if not isinstance(self.lengths, str) or not self.lengths:
            raise WorkloadError(
                f"workload.lengths must be a built-in length distribution name or a trace path, "
                f"got {self.lengths!r}"
            )
        if self.arrival == "trace" and not self.trace:
            raise WorkloadError("workload.trace: a trace path is required when arrival is 'trace'")
        for name in ("max_prompt_tokens", "max_output_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise WorkloadError(f"workload.{name} must be an integer, got {value!r}")
        # prompt and output are both >= 1, so the total needs room for two tokens.
        if self.max_prompt_tokens < 2:
            raise WorkloadError(
                f"workload.max_prompt_tokens must be >= 2, got {self.max_prompt_tokens}"
            )
        if self.max_output_tokens < 1:
            raise WorkloadError(
                f"workload.max_output_tokens must be >= 1, got {self.max_output_tokens}"
            )
        last_t = -math.inf
        for i, entry in enumerate(self.rate_schedule):
            where = f"workload.rate_schedule[{i}]"
            try:
                t, mult = (float(v) for v in entry)
            except (TypeError, ValueError):
                raise WorkloadError(
                    f"{where} must be a pair [t_s, multiplier], got {entry!r}"
                ) from None
            _check_number(f"rate_schedule[{i}] time", t, lo=0.0)
            _check_number(f"rate_schedule[{i}] multiplier", mult, lo=0.0)
            if t <= last_t:
                raise WorkloadError(f"{where}: times must be strictly increasing, got {_num(t)}")
            last_t = t
        self._validate_shifts()

    def _validate_shifts(self) -> None:
        _check_number("shift_period_s", self.shift_period_s, lo=0.0)
        last = -math.inf
        for i, t in enumerate(self.shift_times):
            _check_number(f"shift_times[{i}]", t, lo=0.0)
            if t <= last:
                raise WorkloadError(
                    f"workload.shift_times[{i}]: times must be strictly increasing, got {_num(t)}"
                )
            last = t
        if isinstance(self.shift_step, bool) or not isinstance(self.shift_step, int):
            raise WorkloadError(f"workload.shift_step must be an integer, got {self.shift_step!r}")
        if self.bursts and self.arrival == "trace":
            raise WorkloadError("workload.bursts apply to generated arrivals, not to a trace")
        for i, entry in enumerate(self.bursts):
            where = f"workload.bursts[{i}]"
            try:
                start, length, mult, service = entry
            except (TypeError, ValueError):
                raise WorkloadError(
                    f"{where} must be [start_s, duration_s, multiplier, service], got {entry!r}"
                ) from None
            _check_number(f"bursts[{i}] start", start, lo=0.0)
            _check_number(f"bursts[{i}] duration", length, lo=0.0, strict=True)
            _check_number(f"bursts[{i}] multiplier", mult, lo=0.0)
            if not isinstance(service, str):
                raise WorkloadError(f'{where}: service must be a name or "", got {service!r}')


def _check_number(name: str, value: object, lo: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise WorkloadError(f"workload.{name} must be a number, got {value!r}")
    if math.isinf(value):
        raise WorkloadError(f"workload.{name} must be finite, got {_num(value)}")
    if (value <= lo) if strict else (value < lo):
        op = ">" if strict else ">="
        raise WorkloadError(f"workload.{name} must be {op} {lo:g}, got {_num(value)}")
