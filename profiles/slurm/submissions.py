"""What a run on this profile would submit to Slurm, without a cluster: one JSON line per sbatch.

    python profiles/slurm/submissions.py OUT.jsonl [snakemake args...]   (e.g. --configfile config/paper.yaml)

Runs Snakemake's own dry run on profiles/slurm (its groups, group-components and cores are what
form the group jobs) and records every job the scheduler hands to the executor: the rules in it,
its resources, the partition the Slurm plugin would pick from partitions.yaml, and the sbatch
options the plugin builds (its own get_submit_command and set_gres_string). Jobs that Snakemake
runs on the submitting host (target rules such as `all`) are not submissions and are left out.
Why not parse `snakemake -n`: its text lists member jobs, not the group jobs that are submitted.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from snakemake.executors import dryrun
from snakemake.resources import GroupResources
from snakemake.cli import main as snakemake_main
from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file
from snakemake_executor_plugin_slurm.submit_string import get_submit_command
from snakemake_executor_plugin_slurm.utils import set_gres_string

PROFILE = Path(__file__).resolve().parent
REPO = PROFILE.parents[1]
_log = logging.getLogger("m4i.slurm-dry")


def runs_on_host(job) -> bool:
    """Target rules (no run/script) and localrules: Snakemake runs these itself, never via sbatch.
    (A dry run executes "locally", so job.is_local is true for every job here.)"""
    jobs = list(job.jobs) if job.is_group() else [job]
    localrules = job.dag.workflow._localrules
    return all(j.rule.norun or j.rule.name in localrules for j in jobs)


def remote_group_resources(group) -> dict:
    """A group job's resources as a remote run computes them (GroupJob.resources with
    run_local=False: layers of at most `cores` CPUs, runtime summed over layers); a dry run
    computes them as if local (everything summed)."""
    return GroupResources.basic_layered(
        toposorted_jobs=group.toposorted,
        constraints=group.global_resources,
        run_local=False,
        additive_resources=["runtime"],
        sortby=["runtime"],
    )


def describe(job, partitions) -> dict:
    """One submission as the Slurm plugin would make it (sbatch options, no account)."""
    jobs = list(job.jobs) if job.is_group() else [job]
    if job.is_group():
        job._resources = remote_group_resources(job)  # the dry-run group job never runs
    partition = get_best_partition(partitions, job, _log) if partitions else None
    params = {
        "run_uuid": "dry-run",
        "slurm_logfile": "slurm.log",
        "comment_str": "dry-run",
        "account": "",
        "partition": f" -p {partition}" if partition else "",
        "workdir": "",
    }
    sbatch = get_submit_command(job, params) + set_gres_string(job)
    resources = {k: v for k, v in job.resources.items() if isinstance(v, (int, str)) and not k.startswith("_")}
    return {
        "group": job.groupid if job.is_group() else None,
        "rules": sorted({j.rule.name for j in jobs}),
        "n_jobs": len(jobs),
        "threads": job.threads,
        "resources": resources,
        "partition": partition,
        "sbatch": sbatch,
    }


def submissions(args: list[str]) -> list[dict]:
    partitions = read_partition_file(PROFILE / "partitions.yaml")
    found: list[dict] = []
    run_job = dryrun.Executor.run_job

    def recording_run_job(self, job):
        if not runs_on_host(job):
            found.append(describe(job, partitions))
        return run_job(self, job)

    dryrun.Executor.run_job = recording_run_job
    try:
        snakemake_main(["-n", "all", "-s", str(REPO / "Snakefile"), "--profile", str(PROFILE), *args])
    except SystemExit as exc:
        if exc.code:
            raise
    finally:
        dryrun.Executor.run_job = run_job
    return found


if __name__ == "__main__":
    # A file, not stdout: the dry run itself prints there.
    found = submissions(sys.argv[2:])
    Path(sys.argv[1]).write_text("".join(json.dumps(line, sort_keys=True) + "\n" for line in found))
    print(f"{len(found)} Slurm submissions -> {sys.argv[1]}", file=sys.stderr)
