"""Fit the built-in "azure-conv" length distribution to the Azure LLM 2023 conversation trace.

The model (seallm.workload.lengths.QuantileLengths) is a quantile table of the prompt length
and, for each of a few prompt-quantile bins, a quantile table of the output length; sampling
interpolates them linearly. The marginals are then as close to the trace as the tables are
dense (unlike a lognormal: the prompt marginal has a spike just above 4k tokens), and the
per-bin output tables keep the prompt/output dependence, which in this trace is not monotone
(prompts of ~1k tokens get ~400-token answers, shorter and longer ones far shorter).

    python scripts/fit_lengths.py [TRACE]   (default: ../shared/traces/azure_llm_2023_conv.csv)

It prints the constants to paste into seallm/workload/lengths.py, and how the fitted
distribution compares with the trace.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seallm.workload import read_trace  # noqa: E402
from seallm.workload.lengths import QuantileLengths  # noqa: E402

DEFAULT_TRACE = ROOT.parent / "shared" / "traces" / "azure_llm_2023_conv.csv"

# Dense where the mass is thin (the tails carry the mean and the spread), 2% steps elsewhere.
LEVELS = sorted(
    {0.0, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015}
    | {round(0.02 * i, 4) for i in range(1, 50)}
    | {round(0.5 + 0.02 * i, 4) for i in range(1, 20)}
    | {0.89, 0.91, 0.93, 0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99, 0.9925, 0.995, 0.9975}
    | {0.999, 0.9995, 1.0}
)
# Prompt-quantile bins for the conditional output tables: deciles, the top one split at the
# 4k spike.
BIN_CUTS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0]
OUT_LEVELS = sorted(
    {0.0, 0.005, 0.01, 0.025, 0.05}
    | {round(0.05 * i, 4) for i in range(2, 19)}
    | {0.95, 0.975, 0.99, 0.995, 1.0}
)


def stats(a: np.ndarray) -> str:
    p = np.percentile(a, [10, 50, 90, 99])
    return (
        f"mean {a.mean():8.1f}  std {a.std():8.1f}  p10 {p[0]:6.0f}  median {p[1]:6.0f}  "
        f"p90 {p[2]:6.0f}  p99 {p[3]:6.0f}"
    )


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TRACE
    records = read_trace(path)
    prompt = np.array([r.prompt_tokens for r in records], dtype=float)
    output = np.array([r.output_tokens for r in records], dtype=float)
    n = len(records)
    # "lower" keeps table entries as observed token counts (integers).
    pq = np.quantile(prompt, LEVELS, method="lower").astype(int)
    # Each request's prompt quantile level (mid-rank; ties split by file order) picks its bin.
    u = np.empty(n)
    u[np.argsort(prompt, kind="stable")] = (np.arange(n) + 0.5) / n
    bins = np.searchsorted(BIN_CUTS, u, side="right") - 1
    oq = np.array(
        [
            np.quantile(output[bins == b], OUT_LEVELS, method="lower")
            for b in range(len(BIN_CUTS) - 1)
        ]
    ).astype(int)

    def table(vals: np.ndarray | list, fmt: str) -> str:
        items = [format(v, fmt) for v in vals]
        rows = [", ".join(items[i : i + 10]) for i in range(0, len(items), 10)]
        return "\n".join(f"    {r}," for r in rows)

    print(f"# Fitted by scripts/fit_lengths.py on {path.name} ({n} requests).")
    print("# fmt: off")
    print(f"_AZURE_CONV_LEVELS = (\n{table(LEVELS, 'g')}\n)")
    print(f"_AZURE_CONV_PROMPT_Q = (\n{table(pq, 'd')}\n)")
    print(f"_AZURE_CONV_BIN_CUTS = ({', '.join(format(c, 'g') for c in BIN_CUTS)})")
    print(f"_AZURE_CONV_OUT_LEVELS = (\n{table(OUT_LEVELS, 'g')}\n)")
    print("_AZURE_CONV_OUTPUT_Q = (  # one row per prompt bin")
    for b, row in enumerate(oq):
        print(f"    # prompt quantile levels [{BIN_CUTS[b]:g}, {BIN_CUTS[b + 1]:g})")
        half = (len(row) + 1) // 2
        print("    (" + ", ".join(str(v) for v in row[:half]) + ",")
        print("     " + ", ".join(str(v) for v in row[half:]) + "),")
    print(")")
    print("# fmt: on")

    big = 1 << 30  # no clipping: compare the shapes themselves
    fit = QuantileLengths("fit", LEVELS, pq, BIN_CUTS, OUT_LEVELS, oq, big, big)
    sp, so = fit.sample(400_000, np.random.default_rng(0))
    print(
        f"\n{len(LEVELS)} prompt levels, {len(BIN_CUTS) - 1} bins x {len(OUT_LEVELS)} output levels"
    )
    print(f"trace  prompt: {stats(prompt)}")
    print(f"fitted prompt: {stats(sp)}")
    print(f"trace  output: {stats(output)}")
    print(f"fitted output: {stats(so)}")
    print("mean output by prompt range:   trace   fitted")
    for lo, hi in [
        (0, 100),
        (100, 300),
        (300, 500),
        (500, 1000),
        (1000, 1500),
        (1500, 4000),
        (4000, 5000),
        (5000, 1 << 20),
    ]:
        m, fm = (prompt >= lo) & (prompt < hi), (sp >= lo) & (sp < hi)
        print(f"  [{lo:5d}, {hi:7d}) {m.mean():6.1%} {output[m].mean():7.1f} {so[fm].mean():7.1f}")
    corr = np.corrcoef(prompt, output)[0, 1], np.corrcoef(sp, so)[0, 1]
    print(f"corr(prompt, output): trace {corr[0]:.4f}  fitted {corr[1]:.4f}")


if __name__ == "__main__":
    main()
