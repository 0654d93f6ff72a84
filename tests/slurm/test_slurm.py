"""The `slurm` profile: how it resolves, and the whole pipeline on a real SLURM cluster.

The fast tests check the profiles as Snakemake reads them. The slow ones bring up a
single-node cluster (conftest.slurm_cluster) and run the tiny test workflow
(tests/workflow/config.yaml) through

    snakemake --profile slurm --profile profiles/slurm-local

in their own temporary projects, so they never meet the local workflow test's project.
They grow with the workflow: every job that `snakemake -n` plans (except local rules such as
`all`) must go through sbatch, and the resume test runs as soon as the default target needs
a train_classifier model (it skips, saying so, until then).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.workflow.conftest import ROOT

from .conftest import Cluster, Run, gpu_requests, run_snakemake, slurm_project, start_snakemake

PROFILES = ("--profile", "slurm", "--profile", "profiles/slurm-local")
TIMEOUT = float(os.environ.get("BESTIE_SLURM_TEST_TIMEOUT", "1800"))  # seconds per run
TRAINING_RULE = "train_classifier"


def load_profile(name: str) -> dict:
    return yaml.safe_load((ROOT / "profiles" / name / "config.yaml").read_text())


def local_snakemake(project: Path, *args: str, timeout: float = 600) -> str:
    """A local (non-SLURM) Snakemake call in ``project``; returns stdout, fails loudly."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=project,
        env=dict(os.environ, PATH=path),  # `python` in the rules is this interpreter
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"snakemake {args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def planned_jobs(project: Path, *args: str) -> Counter:
    """Rule -> job count that `snakemake -n` plans."""
    output = local_snakemake(project, "-n", "--quiet", "rules", *args)
    table = re.findall(r"^(\w+)\s+(\d+)$", output, flags=re.MULTILINE)
    return Counter({rule: int(count) for rule, count in table if rule != "total"})


def summary(project: Path, *args: str) -> list[dict[str, str]]:
    """`snakemake --summary` as rows (output_file, date, rule, log-file(s), status, plan)."""
    output = local_snakemake(project, "--summary", *args)
    return list(csv.DictReader(io.StringIO(output), delimiter="\t"))


def slurm_logs(project: Path, rule: str) -> dict[str, Path]:
    """SLURM job id -> its log under logs/slurm/rule_<rule>/<wildcards>/<id>.log."""
    return {path.stem: path for path in (project / "logs/slurm" / f"rule_{rule}").rglob("*.log")}


def failure(run: Run, cluster: Cluster, project: Path) -> str:
    """Everything useful when a SLURM run went wrong."""
    parts = [
        f"snakemake {' '.join(run.args[3:])} -> {run.returncode}",
        run.tail(),
        cluster.diagnostics(),
    ]
    for path in sorted((project / "logs/slurm").rglob("*.log"))[-4:]:
        parts.append(f"--- {path.relative_to(project)}\n{path.read_text(errors='replace')[-2000:]}")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- profiles
def test_profile_slurm_resolves_from_the_repository_root() -> None:
    """`snakemake --profile slurm`, as typed in the repository root, gets profiles/slurm."""
    assert (ROOT / "slurm").is_symlink()
    assert (ROOT / "slurm").resolve() == (ROOT / "profiles" / "slurm").resolve()
    script = (
        "import json\n"
        "from snakemake.cli import parse_args\n"
        "_, args = parse_args(['--profile', 'slurm', '--dry-run'])\n"
        "def value(resource):\n"
        "    try:\n"
        "        return resource.value\n"
        "    except ValueError:\n"
        "        return None\n"
        "print(json.dumps({'executor': args.executor, 'logdir': str(args.slurm_logdir),\n"
        "    'default_resources': {k: value(v) for k, v in args.default_resources.items()}}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout.strip().splitlines()[-1])
    assert resolved["executor"] == "slurm"
    assert resolved["logdir"] == "logs/slurm"
    # The workflow profile (profiles/default) must not replace the cluster's defaults.
    expected = load_profile("slurm")["default-resources"]
    assert {k: resolved["default_resources"].get(k) for k in expected} == expected


def test_workflow_profile_does_not_shadow_the_cluster_profile() -> None:
    """profiles/default wins per top-level key: it may not set a key of profiles/slurm."""
    default, cluster = load_profile("default"), load_profile("slurm")
    shadowed = sorted(k for k in cluster if k in default and default[k] != cluster[k])
    assert not shadowed, f"profiles/default replaces profiles/slurm's {shadowed}"
    assert "default-resources" not in default, "it would drop slurm_partition/slurm_account"
    for name in ("slurm", "slurm-local"):
        profile = load_profile(name)
        assert "set-resources" not in profile and "set-threads" not in profile, (
            f"profiles/{name}: per-rule resources belong in profiles/default"
        )


def test_gpu_rules_ask_for_gpu_not_gpus() -> None:
    resources = load_profile("default").get("set-resources") or {}
    wrong = sorted(rule for rule, entry in resources.items() if "gpus" in (entry or {}))
    assert not wrong, f"use `gpu: N` (the SLURM job step rejects `gpus`): {wrong}"


def test_dry_run_with_the_cluster_profiles(tmp_path: Path) -> None:
    project = slurm_project(tmp_path)
    dry = local_snakemake(project, *PROFILES, "--dry-run")
    assert "Job stats" in dry or "Nothing to be done" in dry


# ----------------------------------------------------------------------------- the cluster
@pytest.mark.slow
def test_whole_pipeline_runs_through_sbatch(
    slurm_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    project = slurm_project(tmp_path_factory.mktemp("slurm-pipeline"))
    planned = planned_jobs(project)
    started = time.monotonic()
    run = run_snakemake(project, slurm_cluster, *PROFILES, timeout=TIMEOUT)
    print(f"SLURM pipeline run: {time.monotonic() - started:.0f} s wall", file=sys.stderr)
    assert run.returncode == 0, failure(run, slurm_cluster, project)

    # Which rules ran locally (`all`, localrules): the rest must have gone through sbatch.
    local = set(re.findall(r"^localrule (\w+):", run.stdout, flags=re.MULTILINE))
    remote = {rule: count for rule, count in planned.items() if rule not in local}
    assert remote, f"no job went to SLURM: {planned}"
    assert run.run_id, run.tail()
    jobs = {job["id"]: job for job in slurm_cluster.jobs("--name", run.run_id)}
    gpus = gpu_requests()
    for rule, count in remote.items():
        logs = slurm_logs(project, rule)
        assert len(logs) == count, f"{rule}: {count} jobs planned, SLURM logs {sorted(logs)}"
        for job_id in logs:
            job = jobs.get(job_id)
            assert job, f"{rule}: job {job_id} unknown\n{failure(run, slurm_cluster, project)}"
            # the plugin's comment: rule_<rule>, then _wildcards when the rule has any
            comment = job["comment"]
            assert comment == f"rule_{rule}" or comment.startswith(f"rule_{rule}_"), job
            assert job["state"] == "COMPLETED", job
            if rule in gpus:  # the production request, served by the fake GPUs
                details = slurm_cluster.job_details(job_id)
                assert re.search(rf"TresPerJob=\S*gres:gpu:(\w+:)?{gpus[rule]}\b", details), details

    # Every artifact of the DAG exists, and nothing is left to do.
    rows = summary(project)
    assert rows
    # temp() outputs (the per-shard files) are deleted by Snakemake once gathered
    missing = [
        row["output_file"]
        for row in rows
        if not (project / row["output_file"]).exists() and "/shards/" not in row["output_file"]
    ]
    assert not missing, f"outputs missing after the SLURM run: {missing}"
    assert planned_jobs(project) == Counter()


# ----------------------------------------------------------------------------- resume
def rule_names(project: Path) -> set[str]:
    return set(local_snakemake(project, "--list-rules").split())


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def checkpoint_progress(path: Path) -> int:
    """Epochs done according to a training checkpoint (0 if there is none yet)."""
    from bestie.engine.checkpoint import load_checkpoint

    if not path.is_file():
        return 0
    return int(load_checkpoint(path)["progress"])


@pytest.mark.slow
def test_killed_training_job_resumes_from_its_checkpoint(
    slurm_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """scancel a training job mid-way; the rerun resumes from checkpoints/last.pt.

    The first run asks for practically endless training (checkpoint every epoch), so the
    kill always lands mid-way however fast the machine is. The rerun asks for one epoch
    more than the checkpoint holds (`epochs` does not invalidate a checkpoint: see
    bestie.engine.classifier_trainer), so it finishes quickly, and only by resuming.
    """
    project = slurm_project(tmp_path_factory.mktemp("slurm-resume"))
    if TRAINING_RULE not in rule_names(project):
        pytest.skip(f"the workflow has no {TRAINING_RULE} rule yet")
    config = project / "config" / "config.yaml"
    endless = project / "endless.yaml"
    endless.write_text(yaml.safe_dump({"classifier": {"epochs": 100000, "checkpoint_every": 1}}))
    configs = ("--configfile", str(config), str(endless))
    rows = [row for row in summary(project, *configs) if row["rule"] == TRAINING_RULE]
    models = sorted(row["output_file"] for row in rows if row["output_file"].endswith("model.pt"))
    if not models:
        pytest.skip(f"{TRAINING_RULE} writes no model.pt that the default target needs yet")
    model = Path(models[-1])  # pam sorts after cam
    checkpoint = model.parent / "checkpoints" / "last.pt"
    # The training job's inputs, locally: only the training job itself goes to SLURM here.
    # (Targets first: --configfile and --omit-from take several values.)
    local_snakemake(project, str(model), "--cores", "2", "--omit-from", TRAINING_RULE, *configs)

    def first_checkpoint() -> bool:
        if started.process.poll() is not None:  # the run ended before any checkpoint
            run = started.finish(timeout=0)
            raise AssertionError(failure(run, slurm_cluster, project))
        return checkpoint_progress(project / checkpoint) >= 1

    started = start_snakemake(project, slurm_cluster, str(model), *PROFILES, *configs)
    try:
        wait_for(first_checkpoint, 600, str(checkpoint))
        job_ids = [
            job["id"]
            for job in slurm_cluster.jobs(states="RUNNING")
            if job["comment"].startswith(f"rule_{TRAINING_RULE}_")
        ]
        assert len(job_ids) == 1, slurm_cluster.diagnostics()
        slurm_cluster.run("scancel", job_ids[0])
        killed = started.finish(timeout=300)
    finally:
        started.stop()
    assert killed.returncode != 0, killed.tail()
    states = {job["id"]: job["state"] for job in slurm_cluster.jobs()}
    assert states[job_ids[0]] == "CANCELLED", states
    done = checkpoint_progress(project / checkpoint)
    assert done >= 1 and not (project / model).exists()

    rerun_config = project / "rerun.yaml"
    rerun_config.write_text(
        yaml.safe_dump({"classifier": {"epochs": done + 1, "checkpoint_every": 1}})
    )
    rerun_configs = ("--configfile", str(config), str(rerun_config))
    rerun = run_snakemake(
        project, slurm_cluster, str(model), *PROFILES, *rerun_configs, timeout=TIMEOUT
    )
    assert rerun.returncode == 0, failure(rerun, slurm_cluster, project)
    assert (project / model).is_file()
    rows = summary(project, *rerun_configs)  # (the log column is filled once the job ran)
    log = next(row["log-file(s)"] for row in rows if row["output_file"] == str(model))
    text = (project / log).read_text(errors="replace")
    resumed = re.findall(r"resumed from .*?(?:epoch|progress) (\d+)", text)
    assert resumed and int(resumed[-1]) == done > 0, text[-3000:]
    epochs = list(csv.DictReader((project / model.parent / "train_log.csv").open()))
    assert [int(row["epoch"]) for row in epochs] == list(range(1, done + 2))
