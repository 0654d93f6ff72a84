"""Run every benchmark and gather their JSON objects into one (SPEC §11 targets, issue 11).

Each benchmark runs as a child process with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads
that busy-wait for descheduled peers inflate wall and CPU time on a shared machine), in
this order: pseudo_labels, augmentation, refine_decode (and again with ``--device cuda``
when CUDA is present), evaluation, cues, syncs, train_step, and last the end-to-end
pipeline (several minutes). Prints the combined object (``-o`` also writes it) and, on
stderr, one line per target with PASS/FAIL.

Usage: python benchmarks/run_all.py [-o benchmarks/results.json] [--skip pipeline ...]
    [--only cues ...] [--quick] [--device auto|cpu|cuda] [--pipeline-results results/]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import load_average, machine

HERE = Path(__file__).resolve().parent
ORDER = (
    "pseudo_labels",
    "augmentation",
    "refine_decode",
    "refine_decode_cuda",
    "evaluation",
    "cues",
    "syncs",
    "train_step",
    "maskrcnn_step",
    "pipeline",
)
QUICK = {  # fewer repetitions: a smoke run of the whole suite in a few minutes
    "pseudo_labels": ["--scenes", "10", "--runs", "2"],
    "augmentation": ["--scenes", "10", "--runs", "2"],
    "refine_decode": ["--scenes", "4", "--runs", "2"],
    "refine_decode_cuda": ["--scenes", "4", "--runs", "2"],
    "evaluation": ["--images", "20", "--repeats", "2"],
    "cues": ["--runs", "2"],
    "train_step": ["--steps", "2"],
    "maskrcnn_step": ["--steps", "1"],
}


def command(name: str, args: argparse.Namespace) -> list[str] | str:
    """The child's command line, or why the benchmark is not run here."""
    script = "bench_refine_decode.py" if name.startswith("refine_decode") else f"bench_{name}.py"
    extra = list(QUICK.get(name, [])) if args.quick else []
    if name == "refine_decode_cuda":
        if args.device == "cpu" or not torch.cuda.is_available():
            return "CUDA is not available" if args.device != "cpu" else "--device cpu"
        extra += ["--device", "cuda"]
    elif name in ("train_step", "syncs"):
        extra += ["--device", args.device]
    elif name == "pipeline" and args.pipeline_results:
        extra += ["--results", str(args.pipeline_results)]
    elif name == "pipeline" and args.pipeline_fallback:
        extra += ["--fallback"]
    return [sys.executable, str(HERE / script), *extra]


def run(name: str, argv: list[str], timeout: float) -> dict[str, Any]:
    """One benchmark's JSON object, with its run's wall time and load average."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    load, started = load_average(), time.perf_counter()
    print(f"[run_all] {name}: {' '.join(argv[1:])} (load {load})", file=sys.stderr)
    try:
        child = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"name": name, "error": f"timed out after {timeout} s"}
    sys.stderr.write(child.stderr[-4000:])
    wall = round(time.perf_counter() - started, 1)
    if child.returncode != 0:
        return {"name": name, "error": f"exit {child.returncode}", "stderr": child.stderr[-2000:]}
    output = json.loads(child.stdout)
    output["run"] = {"command": " ".join(argv[1:]), "wall_s": wall, "load_average_before": load}
    return output


def collect_targets(benchmarks: dict[str, dict]) -> list[dict[str, Any]]:
    """Every benchmark's targets, named by benchmark."""
    return [
        {"benchmark": name, **target}
        for name, output in benchmarks.items()
        for target in output.get("targets", [])
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, help="also write the JSON here")
    parser.add_argument("--only", nargs="+", choices=ORDER, help="run only these")
    parser.add_argument("--skip", nargs="+", choices=ORDER, default=[], help="leave these out")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--pipeline-results", type=Path, help="read this results/ tree")
    parser.add_argument("--pipeline-fallback", action="store_true",
                        help="pipeline with wsss.method gt and maskrcnn off")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per benchmark")
    args = parser.parse_args()
    names = [n for n in ORDER if (not args.only or n in args.only) and n not in args.skip]
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    benchmarks, skipped = {}, {}
    for name in names:
        argv = command(name, args)
        if isinstance(argv, str):
            skipped[name] = argv
            print(f"[run_all] {name}: skipped ({argv})", file=sys.stderr)
            continue
        benchmarks[name] = run(name, argv, args.timeout)
    combined = {
        "name": "bestie benchmarks",
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "targets": collect_targets(benchmarks),
        "skipped": skipped,
        "errors": {n: o["error"] for n, o in benchmarks.items() if "error" in o},
        "benchmarks": benchmarks,
        "machine": machine(),
    }
    report(combined, args.output)


def report(combined: dict[str, Any], output: Path | None) -> None:
    """Print the combined object, write it, and print the target table on stderr."""
    text = json.dumps(combined, indent=2)
    print(text)
    if output is not None:
        output.write_text(text + "\n", encoding="utf-8")
    verdicts = {True: "PASS", False: "FAIL", None: "n/a"}
    print("\n[run_all] targets:", file=sys.stderr)
    for target in combined["targets"]:
        print(
            f"  {verdicts[target['pass']]:4}  {target['benchmark']}: {target['figure']} = "
            f"{target['value']} (target {target['target']}; {target['basis']})",
            file=sys.stderr,
        )
    for name, error in combined["errors"].items():
        print(f"  ERROR {name}: {error}", file=sys.stderr)


if __name__ == "__main__":
    main()
