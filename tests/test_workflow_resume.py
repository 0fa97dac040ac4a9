"""Interrupted training resumes through the workflow; changed training settings start afresh (workflow) or
stop with one line naming the keys (`faceflow train`); the completion manifest train.json."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path


import pytest
import yaml
from train_support import make_ofrecord, run_faceflow, step_batches, tiny_config, write_config
from workflow_helpers import SNAKEMAKE, job_counts, snakemake, tiny_run_workflow

from faceflow.checkpoint import (list_checkpoints, read_manifest, remove_partial_checkpoints, write_checkpoint,
                                 write_manifest)
from faceflow.errors import FaceflowError
from faceflow.train.config import DEFAULTS, load_config, resolve_dataset, validate_config
from faceflow.train.resume import config_differences, find_conflict, prepare_out_dir

RUN = Path("results") / "runs" / "tiny"
MANIFEST = RUN / "train.json"


def _config(**overrides) -> dict:
    return validate_config({**DEFAULTS, "num_classes": 10, "num_images": 100, "max_steps": 8,
                            "checkpoint_every": 2, **overrides})


def _fake_checkpoint(out: Path, step: int, config: dict) -> Path:
    return write_checkpoint(out / "checkpoints", step, config, {"world_size": 1, "total_steps": config["max_steps"]},
                            lambda tmp: None)


# ----- changed-config detection ----------------------------------------------------------------
def test_same_settings_and_resume_free_keys_do_not_conflict() -> None:
    saved, state = _config(), {"step": 4, "world_size": 1}
    assert config_differences(saved, state, _config(), 1) == []
    others = _config(log_every=3, num_threads=1, val_batch_size=7, graph=True, validate_every=0, cpu_affinity=False)
    assert config_differences(saved, state, others, 1) == []
    assert config_differences(saved, state, _config(max_steps=20), 1) == []  # a longer multistep run continues


def test_training_keys_that_differ_are_named_with_old_and_new_value() -> None:
    saved, state = _config(), {"step": 4, "world_size": 1}
    changed = _config(lr=0.05, margins={"s": 32.0}, checkpoint_every=4)
    assert config_differences(saved, state, changed, 1) == [
        "checkpoint_every: 2 -> 4", "lr: 0.1 -> 0.05", "margins: unset -> {'s': 32.0}"]
    assert config_differences(saved, state, _config(max_steps=3), 1) == [
        "max_steps: the run now ends at step 3, before this checkpoint (step 4)"]
    poly = _config(lr_schedule="poly")
    assert config_differences(poly, state, _config(lr_schedule="poly", max_steps=20), 1) == [
        "max_steps: 8 -> 20 steps (the poly LR schedule depends on the run's length)"]


def test_key_missing_from_an_older_checkpoint_counts_as_its_default() -> None:
    saved = {k: v for k, v in _config(fc_mode="partial_fc").items() if k != "partial_fc_momentum"}
    state = {"step": 2, "world_size": 1}
    assert config_differences(saved, state, _config(fc_mode="partial_fc"), 1) == []
    assert config_differences(saved, state, _config(fc_mode="partial_fc", partial_fc_momentum="reset"), 1) == [
        "partial_fc_momentum: 'exact' -> 'reset'"]


def test_conflict_is_an_error_or_the_old_run_is_set_aside(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _fake_checkpoint(out, 2, _config())
    newest = _fake_checkpoint(out, 4, _config())
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    (out / "train.log").write_text("old\n")
    assert find_conflict(out / "checkpoints", _config(log_every=1), 1) is None
    assert prepare_out_dir(out, _config(), 1, restart_if_changed=False, log=print) is None
    conflict = find_conflict(out / "checkpoints", _config(seed=5), 1)
    assert conflict is not None and conflict.checkpoint == newest and conflict.keys == ("seed",)
    with pytest.raises(FaceflowError) as error:
        prepare_out_dir(out, _config(seed=5), 1, restart_if_changed=False, log=print)
    assert "\n" not in str(error.value) and "seed: 0 -> 5" in str(error.value)
    assert "--restart-if-changed" in str(error.value)
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [2, 4]  # untouched
    lines: list[str] = []
    moved = prepare_out_dir(out, _config(seed=5), 1, restart_if_changed=True, log=lines.append)
    assert moved is not None and moved.parent == out / "superseded"
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()
    assert [step for step, _ in list_checkpoints(moved / "checkpoints")] == [2, 4]
    assert (moved / "train.log").read_text() == "old\n"
    assert len(lines) == 1 and "seed: 0 -> 5" in lines[0] and str(moved) in lines[0]


def test_manifest_lists_checkpoints_only_for_a_finished_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    for step in (2, 4):
        _fake_checkpoint(out, step, _config())
    with pytest.raises(FaceflowError, match="not finished"):
        write_manifest(out, 8)
    assert not (out / "train.json").exists()
    manifest = read_manifest(write_manifest(out, 4))
    assert manifest == {"run": "run", "steps": 4, "checkpoints": ["checkpoints/step_000002", "checkpoints/step_000004"]}


def test_partial_checkpoints_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    kept = _fake_checkpoint(tmp_path, 2, _config())
    for name in (".step_000004.abc123.tmp", ".step_000002.def456.old"):
        (checkpoints / name / "backbone").mkdir(parents=True)
    assert sorted(p.name for p in remove_partial_checkpoints(checkpoints)) == [".step_000002.def456.old",
                                                                            ".step_000004.abc123.tmp"]
    assert [p for p in checkpoints.iterdir()] == [kept]


def test_trainer_refuses_checkpoints_of_other_settings_before_building(tmp_path: Path) -> None:
    from faceflow.train.engine import Trainer

    out = tmp_path / "run"
    _fake_checkpoint(out, 2, tiny_config())
    with pytest.raises(FaceflowError, match=r"step_000002: trained with different settings \(seed: 3 -> 4\)"):
        Trainer(tiny_config(seed=4), out, batches=step_batches).run()
    assert not (out / "config.yaml").exists()  # stopped before touching the run


def test_cli_refuses_to_resume_checkpoints_of_other_settings(tmp_path: Path) -> None:
    data = make_ofrecord(tmp_path / "train", classes=6, per_class=4, parts=1)
    config_file = write_config(tmp_path / "tiny.yaml", train_data=str(data))
    out = tmp_path / "run"
    _fake_checkpoint(out, 2, resolve_dataset(load_config(str(config_file))))
    result = run_faceflow(["train", str(config_file), "--out", str(out), "--set", "lr=0.5", "--set", "log_every=2"])
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and message[0].startswith(f"faceflow train: error: {out / 'checkpoints' / 'step_000002'}")
    assert "(lr: 0.02 -> 0.5)" in message[0]
    assert [step for step, _ in list_checkpoints(out / "checkpoints")] == [2]


# ----- the workflow, interrupted -----------------------------------------------------------------
STEPS, EVERY = 300, 60


def _saved(workdir: Path) -> list[int]:
    return [step for step, _ in list_checkpoints(workdir / RUN / "checkpoints")]


def _start(workdir: Path, *targets: str) -> subprocess.Popen:
    """snakemake in its own process group (so a signal to the group is a terminal's Ctrl-C)."""
    log = open(workdir / f"snakemake-{time.monotonic_ns()}.log", "w")
    return subprocess.Popen([SNAKEMAKE, "--cores", "2", *targets], cwd=workdir, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _wait_for_checkpoint_after(workdir: Path, process: subprocess.Popen, step: int) -> int:
    deadline = time.monotonic() + 600  # make test runs other tests on the same cores
    while time.monotonic() < deadline and process.poll() is None:
        newer = [s for s in _saved(workdir) if s > step]
        if newer:
            return newer[0]
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint after step {step} while snakemake ran (exit {process.poll()})")


def _training_pids(group: int) -> list[int]:
    """`faceflow train` processes in snakemake's process group."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
            if os.getpgid(int(entry.name)) == group and b"train" in command and any(b"faceflow" in c for c in command):
                pids.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return pids


def _interrupt(workdir: Path, how: str, after: int) -> int:
    """Start training, wait for a checkpoint newer than `after`, interrupt; returns the newest kept step."""
    process = _start(workdir, str(MANIFEST))
    reached = _wait_for_checkpoint_after(workdir, process, after)
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    elif how == "kill-training":  # the job dies (OOM killer, node failure); snakemake reports it failed
        pids = _training_pids(process.pid)
        assert pids, "no faceflow train process found"
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    else:  # snakemake and its job killed at once (SLURM time limit of an interactive allocation)
        os.killpg(process.pid, signal.SIGKILL)
    try:
        process.wait(timeout=300)  # the job's processes exit one by one; slow when make test's workers share the cores
    except subprocess.TimeoutExpired:
        left = subprocess.run(["ps", "-o", "pid,stat,etime,args", "-g", str(process.pid)], text=True,
                              stdout=subprocess.PIPE).stdout
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"snakemake still running 300 s after {how}; its process group:\n{left}")
    assert process.returncode != 0
    if how == "kill-all":
        assert snakemake(workdir, "--unlock").returncode == 0
    saved = _saved(workdir)
    assert saved[-1] >= reached and saved[-1] < STEPS, (how, saved)
    assert not (workdir / MANIFEST).exists()
    return saved[-1]


def _resumed_from(workdir: Path) -> list[int]:
    lines = (workdir / RUN / "train.log").read_text()
    return [int(m) for m in re.findall(r"resuming from results/runs/tiny/checkpoints/step_(\d{6}) ", lines)]


@pytest.mark.slow
def test_interrupted_workflow_resumes_training_and_changed_settings_restart(tmp_path: Path) -> None:
    workdir = tiny_run_workflow(tmp_path / "wf", steps=STEPS, checkpoint_every=EVERY)
    prepared = snakemake(workdir, "--cores", "2", "results/ofrecord/synthetic/train")
    assert prepared.returncode == 0, prepared.stdout[-3000:]

    kept = []
    for how in ("ctrl-c", "kill-training", "kill-all"):
        kept.append(_interrupt(workdir, how, kept[-1] if kept else 0))
        assert _resumed_from(workdir) == kept[:-1]  # each rerun resumed from what the previous one kept

    final = snakemake(workdir, "--cores", "2", "all")
    assert final.returncode == 0, final.stdout[-3000:]
    assert _resumed_from(workdir) == kept
    console = (workdir / "results" / "logs" / "train" / "tiny.log").read_text()
    trained = [int(step) for step in re.findall(r"Global Step: (\d+) ", console)]
    assert trained == list(range(kept[-1] + 1, STEPS + 1))  # only the steps after the last checkpoint
    steps = [json.loads(line)["step"] for line in (workdir / RUN / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))  # one consistent curve across the interruptions
    expected = [f"checkpoints/step_{s:06d}" for s in range(EVERY, STEPS + 1, EVERY)]
    assert read_manifest(workdir / MANIFEST) == {"run": "tiny", "steps": STEPS, "checkpoints": expected}
    for step in range(EVERY, STEPS + 1, EVERY):
        record = json.loads((workdir / RUN / "validation" / f"step_{step:06d}" / "lfw.json").read_text())
        assert record["step"] == step
    assert json.loads((workdir / RUN / "export" / "export.json").read_text())["step"] == STEPS
    assert (workdir / RUN / "export" / "model.onnx").is_file()
    assert (workdir / "results" / "report" / "report.html").is_file()
    assert job_counts(snakemake(workdir, "-n", "all").stdout) == {}

    config_file = workdir / "config" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    config["runs"]["tiny"].update(lr=0.02, steps=EVERY, checkpoint_every=EVERY // 2)
    config_file.write_text(yaml.safe_dump(config))
    changed = snakemake(workdir, "--cores", "2", "all")
    assert changed.returncode == 0, changed.stdout[-3000:]
    log = (workdir / RUN / "train.log").read_text()
    assert "lr: 0.05 -> 0.02" in log and "training from step 0" in log and "resuming" not in log
    superseded = list((workdir / RUN / "superseded").iterdir())
    assert len(superseded) == 1 and [s for s, _ in list_checkpoints(superseded[0] / "checkpoints")] == \
        list(range(EVERY, STEPS + 1, EVERY))
    assert _saved(workdir) == [EVERY // 2, EVERY]
    assert sorted(p.name for p in (workdir / RUN / "validation").iterdir()) == [f"step_{EVERY // 2:06d}",
                                                                              f"step_{EVERY:06d}"]
    report = (workdir / "results" / "report" / "accuracy.csv").read_text().splitlines()
    assert len(report) == 1 + 2
