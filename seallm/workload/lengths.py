"""Request length distributions: (prompt, output) token counts.

Two kinds: a built-in distribution fitted offline to a real trace (constants below, so the
package needs no data files at run time), and empirical resampling of a trace's own pairs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from .readers import read_trace
from .records import WorkloadError

_STATS_SAMPLES = 200_000  # fixed sample behind the mean/std of distributions without closed form
_STATS_SEED = 20231116


class LengthDistribution:
    """Base: subclasses draw raw pairs; clipping and the statistics are shared."""

    name: str

    def __init__(self, max_prompt: int, max_output: int) -> None:
        if max_prompt < 2 or max_output < 1:
            raise WorkloadError(
                f"length limits need max_prompt >= 2 and max_output >= 1, "
                f"got {max_prompt} and {max_output}"
            )
        self.max_prompt = max_prompt
        self.max_output = max_output

    def _raw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """n (prompt, output) pairs as int64 arrays, each >= 1 and within the limits."""
        prompt, output = self._raw(n, rng)
        return self._clip(prompt, output)

    def _clip(self, prompt: np.ndarray, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # max_prompt is also the context window: prompt + output <= max_prompt. The prompt is
        # cut first (as chat frontends truncate history), so the output distribution -- the
        # decode work that dominates latency -- keeps its shape.
        output = np.clip(output, 1, min(self.max_output, self.max_prompt - 1)).astype(np.int64)
        prompt = np.clip(prompt, 1, self.max_prompt - output).astype(np.int64)
        return prompt, output

    @cached_property
    def _stats(self) -> tuple[float, float, float, float]:
        p, o = self.sample(_STATS_SAMPLES, np.random.default_rng(_STATS_SEED))
        return float(p.mean()), float(o.mean()), float(p.std()), float(o.std())

    @property
    def mean_prompt(self) -> float:
        return self._stats[0]

    @property
    def mean_output(self) -> float:
        return self._stats[1]

    @property
    def std_prompt(self) -> float:
        return self._stats[2]

    @property
    def std_output(self) -> float:
        return self._stats[3]


class QuantileLengths(LengthDistribution):
    """Prompt from a quantile table; output from a quantile table conditional on the prompt's
    quantile bin (see scripts/fit_lengths.py).

    Inverse-CDF sampling through piecewise-linear quantile functions reproduces the marginals
    as closely as the tables are dense, and the per-bin output tables keep the dependence
    between prompt and output -- in the Azure trace it is not monotone (mid-size prompts have
    the longest answers), so a single correlation coefficient would not describe it.
    """

    def __init__(
        self,
        name: str,
        levels: Sequence[float],
        prompt_q: Sequence[float],
        bin_cuts: Sequence[float],
        out_levels: Sequence[float],
        output_q: Sequence[Sequence[float]],
        max_prompt: int,
        max_output: int,
    ) -> None:
        super().__init__(max_prompt, max_output)
        self.name = name
        self.levels = np.asarray(levels, dtype=float)
        self.prompt_q = np.asarray(prompt_q, dtype=float)
        self.bin_cuts = np.asarray(bin_cuts, dtype=float)  # prompt quantile levels, 0 .. 1
        self.out_levels = np.asarray(out_levels, dtype=float)
        self.output_q = np.asarray(output_q, dtype=float).reshape(len(bin_cuts) - 1, -1)
        if self.levels.shape != self.prompt_q.shape or self.output_q.shape[1] != len(out_levels):
            raise WorkloadError(f"length distribution {name}: table shapes do not match")

    def _raw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        u = rng.random((2, n))
        prompt = np.rint(np.interp(u[0], self.levels, self.prompt_q))
        b = np.clip(
            np.searchsorted(self.bin_cuts, u[0], side="right") - 1, 0, len(self.output_q) - 1
        )
        # linear interpolation in each sample's own row of the output table
        i = np.clip(
            np.searchsorted(self.out_levels, u[1], side="right") - 1, 0, len(self.out_levels) - 2
        )
        lo, hi = self.out_levels[i], self.out_levels[i + 1]
        w = (u[1] - lo) / (hi - lo)
        output = np.rint(self.output_q[b, i] * (1.0 - w) + self.output_q[b, i + 1] * w)
        return prompt, output


class ScaledLengths(LengthDistribution):
    """Another distribution with prompt and output lengths multiplied by constants: a
    service whose requests are shaped like a known trace's but longer or shorter (a code
    completion service with short answers, a writing service with long ones)."""

    def __init__(self, base: LengthDistribution, prompt: float, output: float) -> None:
        super().__init__(base.max_prompt, base.max_output)
        self.name = f"{base.name}:prompt={prompt:g},output={output:g}"
        self.base, self.prompt_scale, self.output_scale = base, prompt, output

    def _raw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        p, o = self.base._raw(n, rng)
        return np.rint(p * self.prompt_scale), np.rint(o * self.output_scale)


class EmpiricalLengths(LengthDistribution):
    """Uniform resampling, with replacement, of the (prompt, output) pairs of a trace."""

    def __init__(self, path: str | Path, max_prompt: int, max_output: int) -> None:
        super().__init__(max_prompt, max_output)
        self.name = str(path)
        records = read_trace(path)
        if not records:
            raise WorkloadError(f"{path}: trace has no requests to take lengths from")
        self.prompts = np.array([r.prompt_tokens for r in records], dtype=np.int64)
        self.outputs = np.array([r.output_tokens for r in records], dtype=np.int64)

    def _raw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        idx = rng.integers(0, len(self.prompts), size=n)
        return self.prompts[idx], self.outputs[idx]

    @cached_property
    def _stats(self) -> tuple[float, float, float, float]:
        # Resampling is uniform over the pairs, so the clipped pairs' moments are exact.
        p, o = self._clip(self.prompts, self.outputs)
        return float(p.mean()), float(o.mean()), float(p.std()), float(o.std())


# --- built-in distributions ---------------------------------------------------------------

# "azure-conv": Azure LLM inference trace 2023, conversation (1 h, 19,366 requests; CC-BY 4.0,
# Azure Public Dataset). Tables printed by `python scripts/fit_lengths.py`, which also reports
# the fit: prompt mean 1156 vs 1155, median 1020 vs 1020; output mean 212 vs 211, median 131
# vs 129 (fitted vs trace, before clipping).
# Fitted by scripts/fit_lengths.py on azure_llm_2023_conv.csv (19366 requests).
# fmt: off
_AZURE_CONV_LEVELS = (
    0, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.04, 0.06,
    0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.22, 0.24, 0.26,
    0.28, 0.3, 0.32, 0.34, 0.36, 0.38, 0.4, 0.42, 0.44, 0.46,
    0.48, 0.5, 0.52, 0.54, 0.56, 0.58, 0.6, 0.62, 0.64, 0.66,
    0.68, 0.7, 0.72, 0.74, 0.76, 0.78, 0.8, 0.82, 0.84, 0.86,
    0.88, 0.89, 0.9, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97,
    0.975, 0.98, 0.985, 0.99, 0.9925, 0.995, 0.9975, 0.999, 0.9995, 1,
)
_AZURE_CONV_PROMPT_Q = (
    2, 8, 10, 16, 23, 29, 58, 91, 181, 191,
    201, 207, 222, 317, 375, 381, 387, 392, 395, 398,
    400, 403, 406, 411, 419, 433, 703, 903, 971, 994,
    1009, 1020, 1031, 1041, 1050, 1060, 1071, 1081, 1092, 1102,
    1116, 1130, 1147, 1171, 1214, 1311, 1315, 1368, 1688, 2032,
    2401, 2584, 2734, 3291, 4073, 4076, 4079, 4083, 4086, 4090,
    4092, 4098, 4110, 4142, 4178, 4831, 5388, 6122, 6472, 14050,
)
_AZURE_CONV_BIN_CUTS = (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1)
_AZURE_CONV_OUT_LEVELS = (
    0, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3,
    0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8,
    0.85, 0.9, 0.95, 0.975, 0.99, 0.995, 1,
)
_AZURE_CONV_OUTPUT_Q = (  # one row per prompt bin
    # prompt quantile levels [0, 0.1)
    (11, 12, 12, 12, 16, 66, 86, 101, 112, 122, 133, 144, 154, 161,
     163, 169, 177, 182, 189, 204, 217, 217, 217, 246, 292, 342, 1000),
    # prompt quantile levels [0.1, 0.2)
    (7, 14, 14, 14, 18, 18, 46, 53, 59, 62, 66, 69, 72, 76,
     79, 82, 87, 92, 99, 110, 131, 162, 183, 217, 217, 217, 436),
    # prompt quantile levels [0.2, 0.3)
    (24, 47, 53, 60, 72, 80, 83, 86, 88, 89, 91, 92, 94, 96,
     98, 100, 102, 106, 109, 114, 121, 131, 143, 155, 170, 181, 200),
    # prompt quantile levels [0.3, 0.4)
    (25, 43, 51, 63, 75, 81, 85, 87, 89, 91, 93, 95, 97, 99,
     101, 103, 106, 109, 113, 121, 129, 140, 153, 169, 200, 327, 739),
    # prompt quantile levels [0.4, 0.5)
    (10, 30, 35, 44, 57, 81, 91, 104, 121, 373, 382, 389, 394, 395,
     397, 401, 406, 411, 415, 422, 429, 448, 513, 565, 609, 622, 921),
    # prompt quantile levels [0.5, 0.6)
    (33, 51, 63, 90, 368, 379, 386, 391, 394, 396, 397, 399, 401, 406,
     411, 414, 415, 420, 428, 431, 444, 477, 538, 604, 667, 939, 1000),
    # prompt quantile levels [0.6, 0.7)
    (28, 45, 51, 84, 363, 377, 383, 388, 393, 396, 396, 398, 402, 407,
     411, 414, 418, 426, 429, 438, 455, 500, 569, 619, 661, 919, 1000),
    # prompt quantile levels [0.7, 0.8)
    (26, 37, 42, 47, 60, 92, 137, 157, 181, 207, 373, 383, 391, 396,
     397, 401, 406, 412, 417, 424, 429, 453, 523, 596, 643, 672, 992),
    # prompt quantile levels [0.8, 0.9)
    (15, 27, 31, 37, 44, 50, 55, 63, 70, 75, 80, 85, 90, 95,
     101, 108, 116, 126, 139, 149, 165, 191, 233, 375, 421, 480, 918),
    # prompt quantile levels [0.9, 0.95)
    (17, 25, 26, 27, 29, 34, 38, 40, 43, 46, 48, 50, 54, 58,
     64, 69, 76, 84, 96, 107, 120, 137, 163, 198, 300, 371, 535),
    # prompt quantile levels [0.95, 1)
    (17, 25, 26, 28, 31, 36, 39, 41, 44, 47, 49, 52, 54, 59,
     62, 66, 70, 75, 83, 91, 104, 122, 143, 167, 228, 336, 757),
)
# fmt: on


def _azure_conv(max_prompt: int, max_output: int) -> LengthDistribution:
    return QuantileLengths(
        "azure-conv",
        _AZURE_CONV_LEVELS,
        _AZURE_CONV_PROMPT_Q,
        _AZURE_CONV_BIN_CUTS,
        _AZURE_CONV_OUT_LEVELS,
        _AZURE_CONV_OUTPUT_Q,
        max_prompt,
        max_output,
    )


BUILTIN_LENGTHS = {"azure-conv": _azure_conv}


def get_length_distribution(
    name_or_path: str, max_prompt: int = 4096, max_output: int = 2048
) -> LengthDistribution:
    """A built-in fitted distribution by name, or empirical resampling of a trace file;
    either may be scaled with a suffix `:prompt=X,output=Y` (each part optional)."""
    if ":" in name_or_path and not os.path.isfile(name_or_path):
        base, _, scales = name_or_path.rpartition(":")
        factors = _parse_scales(name_or_path, scales)
        return ScaledLengths(
            get_length_distribution(base, max_prompt, max_output),
            factors.get("prompt", 1.0),
            factors.get("output", 1.0),
        )
    if name_or_path in BUILTIN_LENGTHS:
        return _builtin(name_or_path, max_prompt, max_output)
    if os.path.isfile(name_or_path):
        st = os.stat(name_or_path)
        return _empirical(str(name_or_path), max_prompt, max_output, st.st_mtime_ns, st.st_size)
    raise WorkloadError(
        f"workload.lengths: {name_or_path!r} is neither a built-in length distribution "
        f"({', '.join(BUILTIN_LENGTHS)}) nor a trace file"
    )


def _parse_scales(spec: str, scales: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in scales.split(","):
        key, _, value = part.partition("=")
        try:
            factor = float(value)
        except ValueError:
            factor = -1.0
        if key.strip() not in ("prompt", "output") or factor <= 0:
            raise WorkloadError(
                f"workload.lengths: {spec!r}: expected NAME:prompt=X,output=Y with positive "
                f"factors, got {part!r}"
            )
        out[key.strip()] = factor
    return out


# Cached so repeated runs share the arrays and the statistics sample.
@lru_cache(maxsize=16)
def _builtin(name: str, max_prompt: int, max_output: int) -> LengthDistribution:
    return BUILTIN_LENGTHS[name](max_prompt, max_output)


@lru_cache(maxsize=16)
def _empirical(path: str, max_prompt: int, max_output: int, _m: int, _s: int) -> EmpiricalLengths:
    return EmpiricalLengths(path, max_prompt, max_output)
