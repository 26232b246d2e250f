"""Workloads: trace readers, arrival processes, length distributions, multi-service mixing."""

from .generate import generate, replay_trace
from .lengths import (
    BUILTIN_LENGTHS,
    EmpiricalLengths,
    LengthDistribution,
    QuantileLengths,
    get_length_distribution,
)
from .popularity import popularity_weights, service_rates, service_shares
from .readers import FORMATS, detect_format, read_trace, write_trace
from .records import ARRIVALS, TraceRecord, WorkloadError, WorkloadSpec

__all__ = [
    "ARRIVALS",
    "BUILTIN_LENGTHS",
    "FORMATS",
    "EmpiricalLengths",
    "LengthDistribution",
    "QuantileLengths",
    "TraceRecord",
    "WorkloadError",
    "WorkloadSpec",
    "detect_format",
    "generate",
    "get_length_distribution",
    "popularity_weights",
    "read_trace",
    "replay_trace",
    "service_rates",
    "service_shares",
    "write_trace",
]
