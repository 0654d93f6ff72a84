"""End-to-end cost of the default pipeline: wall time and peak memory per stage.

Runs ``snakemake --cores 2`` on the embedded ``config/config.yaml`` in a scratch copy of the
workflow (``Snakefile``, ``workflow/``, ``profiles/`` and ``environment.yml`` symlinked,
``config/`` copied), then reads every job's Snakemake ``benchmark:`` file
(``results/**/benchmarks/*.tsv``: run time ``s``, peak ``max_rss`` in MB, ``cpu_time``) and
prints one JSON object (``common.py`` shape): the total wall time, the CPU time and largest
peak RSS of all child processes (``getrusage``), and per rule its jobs, summed and longest
run time, CPU time and peak RSS. Target: the whole DAG in under 15 minutes (wall time).

If ``snakemake -n`` fails on the default config (a rule still missing), or with
``--fallback``, the run adds ``--configfile`` overrides ``wsss: {method: gt}`` and
``maskrcnn: {enabled: false}`` and says so in ``inputs.overrides``.

With ``--results DIR`` nothing runs: the figures come from an existing ``results/`` tree's
benchmark files; the wall time is then the span from the first job's start (file time minus
its run time) to the last job's end.

Usage: python benchmarks/bench_pipeline.py [--cores 2] [--workdir DIR] [--keep]
    [--fallback] [--timeout 5400] [--results results/]
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import check, emit, result

ROOT = Path(__file__).resolve().parents[1]
LINKED = ("Snakefile", "workflow", "profiles", "environment.yml")
OVERRIDES = {"wsss": {"method": "gt"}, "maskrcnn": {"enabled": False}}
TARGET_S = 15 * 60


def make_project(directory: Path) -> Path:
    """The repository's workflow in ``directory``: code symlinked, config/ copied."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in LINKED:
        (directory / name).symlink_to(ROOT / name)
    shutil.copytree(ROOT / "config", directory / "config")
    return directory


def snakemake(project: Path, *args: str, log: Path, timeout: float | None = None) -> int:
    """Run Snakemake in ``project`` (this interpreter's environment first on PATH).

    Snakemake runs in a session of its own; on timeout that whole process group (it and
    its jobs) is terminated and the exit code is -1.
    """
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    with open(log, "w", encoding="utf-8") as handle:
        child = subprocess.Popen(
            [sys.executable, "-m", "snakemake", *args],
            cwd=project,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            return -1


def job_counts(dry_run_log: Path) -> dict[str, int]:
    """The 'Job stats' table of a dry run: {rule: jobs}."""
    counts, inside = {}, False
    for line in dry_run_log.read_text(encoding="utf-8").splitlines():
        if line.startswith("job ") and "count" in line:
            inside = True
            continue
        match = re.fullmatch(r"(\w+)\s+(\d+)", line.strip())
        if inside and match and match.group(1) != "total":
            counts[match.group(1)] = int(match.group(2))
        elif inside and line.strip().startswith("total"):
            break
    return counts


def rule_names() -> list[str]:
    """Every rule of the workflow, longest first (benchmark files start with the rule)."""
    names = set()
    for path in (ROOT / "workflow" / "rules").glob("*.smk"):
        names.update(re.findall(r"^rule (\w+):", path.read_text(encoding="utf-8"), re.M))
    return sorted(names, key=len, reverse=True)


def read_benchmarks(results: Path) -> list[dict[str, Any]]:
    """One row per benchmark file: rule, file, s, max_rss (MB), cpu_time, end time."""
    rules, jobs = rule_names(), []
    for path in sorted(results.glob("**/benchmarks/*.tsv")):
        with open(path, encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if not rows:
            continue
        row = rows[-1]
        stem = path.stem
        rule = next((r for r in rules if stem == r or stem.startswith(r + "_")), stem)
        jobs.append({
            "rule": rule, "file": str(path.relative_to(results)), "s": _number(row["s"]),
            "max_rss_mb": _number(row.get("max_rss")), "cpu_s": _number(row.get("cpu_time")),
            "mean_load": _number(row.get("mean_load")), "end": path.stat().st_mtime,
        })  # fmt: skip
    return jobs


def _number(text: str | None) -> float | None:
    try:
        return round(float(text), 2)
    except (TypeError, ValueError):
        return None  # Snakemake writes "NA" where it could not measure


def per_rule(jobs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per rule: jobs, summed and longest run time, summed CPU time, peak RSS."""
    grouped: dict[str, list] = collections.defaultdict(list)
    for job in jobs:
        grouped[job["rule"]].append(job)
    rules = {}
    for rule, rows in grouped.items():
        rules[rule] = {
            "jobs": len(rows),
            "s": round(sum(r["s"] or 0 for r in rows), 1),
            "max_job_s": max(r["s"] or 0 for r in rows),
            "cpu_s": round(sum(r["cpu_s"] or 0 for r in rows), 1),
            "max_rss_mb": max((r["max_rss_mb"] or 0 for r in rows), default=None),
        }
    return dict(sorted(rules.items(), key=lambda item: -item[1]["s"]))


def span_s(jobs: list[dict[str, Any]]) -> float | None:
    """From the first job's start (end minus run time) to the last job's end."""
    if not jobs:
        return None
    start = min(job["end"] - (job["s"] or 0) for job in jobs)
    return round(max(job["end"] for job in jobs) - start, 1)


def config_inputs(config_file: Path, overrides: dict | None) -> dict[str, Any]:
    """The sizes that drive the pipeline's cost (from the config that ran)."""
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    synthetic = config.get("dataset", {}).get("synthetic", {})
    get = config.get
    return {
        "dataset": {key: synthetic.get(key) for key in ("num_train", "num_val", "height", "width")},
        "classes": len(synthetic.get("classes", [])),
        "experiments": list(get("experiments", {}) or {"bestie": {}}),
        "shards": get("shards"),
        "classifier_epochs": get("classifier", {}).get("epochs"),
        "wsss": {key: get("wsss", {}).get(key) for key in ("method", "retrain", "iterations")},
        "instance": {key: get("instance", {}).get(key)
                     for key in ("backbone", "crop", "batch_size", "iterations")},
        "maskrcnn_enabled": get("maskrcnn", {}).get("enabled"),
    }  # fmt: skip


def prepare(project: Path, args: argparse.Namespace) -> tuple[list[str], dict | None, str]:
    """Dry-run the default config; fall back to the overrides when asked or when it fails.

    Returns:
        the extra Snakemake arguments, the overrides applied (or None), and why.
    """
    log = project.parent / "dry_run.log"
    code = snakemake(project, "-n", "--cores", str(args.cores), log=log)
    if code == 0 and not args.fallback:
        return [], None, "none: the default config's dry run succeeded"
    why = "--fallback" if args.fallback else f"dry run failed: {_tail(log, 3)}"
    (project / "config" / "bench_overrides.yaml").write_text(yaml.safe_dump(OVERRIDES))
    extra = ["--configfile", "config/bench_overrides.yaml"]
    code = snakemake(project, "-n", "--cores", str(args.cores), *extra, log=log)
    if code != 0:
        raise SystemExit(f"snakemake -n fails even with the overrides: {_tail(log, 20)}")
    return extra, OVERRIDES, why


def _tail(log: Path, lines: int) -> str:
    return " | ".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def run_pipeline(args: argparse.Namespace) -> tuple[dict, dict, Path]:
    """Run the whole DAG once in a scratch project; (figures, inputs, results folder)."""
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bestie_pipeline_"))
    project = make_project(workdir / "project")
    extra, overrides, why = prepare(project, args)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    log = workdir / "snakemake.log"
    code = snakemake(project, "--cores", str(args.cores), *extra, log=log, timeout=args.timeout)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    figures = {
        "exit_code": code,
        "total_wall_s": round(wall, 1),
        "total_wall_min": round(wall / 60, 2),
        "children_cpu_s": round(cpu, 1),
        "children_max_rss_mb": round(after.ru_maxrss / 1024, 1),
    }
    if code != 0:
        figures["log_tail"] = _tail(log, 30)
    counts = job_counts(workdir / "dry_run.log")
    inputs = {
        "cores": args.cores,
        "config": "config/config.yaml (embedded default)",
        "overrides": overrides,
        "overrides_reason": why,
        "dag_jobs": counts,
        "maskrcnn_in_dag": "train_maskrcnn" in counts,
        **config_inputs(project / "config" / "config.yaml", overrides),
        "workdir": str(workdir) if args.keep else None,
    }
    return figures, inputs, project / "results"


def job_figures(results: Path, inputs: dict) -> dict[str, Any]:
    """Per-rule figures from the benchmark files, and the rules that have none."""
    jobs = read_benchmarks(results)
    rules = per_rule(jobs)
    counts = inputs.get("dag_jobs") or {}
    return {
        "benchmarked_jobs": len(jobs),
        "sum_job_s": round(sum(job["s"] or 0 for job in jobs), 1),
        "sum_job_cpu_s": round(sum(job["cpu_s"] or 0 for job in jobs), 1),
        "jobs_span_s": span_s(jobs),
        "max_job_rss_mb": max((job["max_rss_mb"] or 0 for job in jobs), default=None),
        "mean_job_load": _mean([job["mean_load"] for job in jobs if job["mean_load"]]),
        "per_rule": rules,
        "rules_without_benchmark_file": sorted(
            rule for rule in counts if rule != "all" and rule not in rules
        )
        if counts
        else None,
    }


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--workdir", help="scratch folder (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch project")
    parser.add_argument("--fallback", action="store_true", help="always apply the overrides")
    parser.add_argument("--timeout", type=float, default=5400, help="seconds for the run")
    parser.add_argument("--results", type=Path, help="read this results/ tree, run nothing")
    args = parser.parse_args()
    if args.results:
        figures, inputs = {}, {"results": str(args.results), "mode": "read existing results"}
        figures.update(job_figures(args.results, inputs))
        figures["total_wall_s"] = figures["jobs_span_s"]
        basis = "span of the benchmark files (first start to last end; covers only jobs with one)"
    else:
        figures, inputs, results = run_pipeline(args)
        figures.update(job_figures(results, inputs))
        basis = "wall time of snakemake --cores N"
        if not args.keep:
            shutil.rmtree(results.parent.parent, ignore_errors=True)
    total = figures.get("total_wall_s")
    passed = figures.get("exit_code", 0) == 0
    targets = [check("total_wall_s", total if passed else None, TARGET_S, unit="s", basis=basis)]
    emit(result("pipeline", inputs, figures, targets=targets))


if __name__ == "__main__":
    main()
