#!/usr/bin/env python3
"""Snakemake cluster-status command: print running, success or failed for one SLURM job id.

Asks sacct (slurmdbd accounting) first and falls back to scontrol (jobs slurmctld still holds);
a job neither knows is failed, a query that could not run at all counts as still running.
"""
import subprocess
import sys

RUNNING = {"PENDING", "CONFIGURING", "COMPLETING", "RUNNING", "SUSPENDED", "REQUEUED",
           "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
SUCCESS = {"COMPLETED"}
UNKNOWN_JOB = "Invalid job id specified"


def _run(cmd: list[str]) -> tuple[int, str]:
    """Exit code and stdout+stderr of cmd (-1 when it could not run)."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (subprocess.SubprocessError, OSError) as err:
        return -1, str(err)
    return done.returncode, done.stdout + done.stderr


def sacct_state(jobid: str) -> str:
    """State of the job's allocation as recorded by slurmdbd ('' when not recorded)."""
    code, out = _run(["sacct", "-j", jobid, "-X", "-n", "-P", "-o", "JobIDRaw,State"])
    for line in out.splitlines() if code == 0 else []:
        raw, _, state = line.partition("|")
        if raw == jobid and state:
            return state.split()[0]
    return ""


def scontrol_state(jobid: str) -> str:
    """JobState from slurmctld; 'UNKNOWN' when it answers that the job does not exist, '' on error."""
    code, out = _run(["scontrol", "-o", "show", "job", jobid])
    if code != 0:
        return "UNKNOWN" if UNKNOWN_JOB in out else ""
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return ""


def status(jobid: str) -> str:
    """Map the SLURM state of jobid to Snakemake's running/success/failed."""
    state = sacct_state(jobid) or scontrol_state(jobid)
    if not state or state in RUNNING:
        return "running"
    return "success" if state in SUCCESS else "failed"


if __name__ == "__main__":
    print(status(sys.argv[1]))
