"""Managing a submitted job from its run folder: job.json, `wmlp slurm status|logs|cancel`.

The fast tests use the recording fakes or an empty folder; the others submit real jobs to the local Slurm
cluster (tests/infra/slurm.py) with the real `wmlp slurm submit`, and drive the real commands against them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.infra.render_tools import FakeTools, child_env, quick_sets, wmlp
from tests.infra.slurm import FINAL_STATES, LocalSlurmCluster

# ------------------------------------------------------------------------------------- fast: no cluster

SUBMIT = ("slurm", "submit", "--recipe", "cpu", "--set", "data.path=/datasets/imagenet")  # the fakes never read it


def test_submit_records_the_job_and_keeps_earlier_submissions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeTools(tmp_path)
    monkeypatch.chdir(tmp_path)
    first = wmlp(*SUBMIT, "--run-dir", "run", env=fake.env(FAKE_SBATCH_OUT="812;wmlp\n"))
    assert first.exit_code == 0 and first.stdout == "812\n", first.output
    (tmp_path / "run" / ".cancel").write_text("812\n")  # `wmlp slurm cancel` of the first job
    second = wmlp(*SUBMIT, "--run-dir", "run", env=fake.env(FAKE_SBATCH_OUT="813\n"))
    assert second.exit_code == 0 and second.stdout == "813\n", second.output

    record = json.loads((tmp_path / "run" / "job.json").read_text())
    assert (tmp_path / "run" / "job.json").stat().st_mode & 0o044 == 0o044 & ~current_umask()
    assert record["job_id"] == "813" and record["cluster"] is None
    assert record["job_name"] == "wmlp-cpu" and record["submit_dir"] == str(tmp_path)
    assert record["script"] == str(tmp_path / "run" / "logs" / "813.sbatch")
    assert Path(record["script"]).read_text().startswith("#!/usr/bin/env bash\n#SBATCH --job-name=wmlp-cpu\n")
    assert record["site"] is None and record["sbatch_args"] == []
    assert record["recipe"].endswith(".recipe.yaml") and Path(record["recipe"]).is_file()
    assert record["submitted"].endswith("Z") and len(record["submitted"]) == 20
    (earlier,) = record["history"]
    assert earlier["job_id"] == "812" and earlier["cluster"] == "wmlp" and "history" not in earlier
    assert not list((tmp_path / "run").glob(".job.json.*")), "temporary file left behind"
    assert not (tmp_path / "run" / ".cancel").exists(), "the first job's cancel would stop the second's requeues"

    # Without --run-dir: the script's default, <train.output>/<recipe>-<job id>, from the submit folder.
    third = wmlp(*SUBMIT, env=fake.env(FAKE_SBATCH_OUT="900\n"))
    assert third.exit_code == 0, third.output
    assert json.loads((tmp_path / "runs" / "cpu-900" / "job.json").read_text())["job_id"] == "900"


@pytest.mark.parametrize("command", [["status"], ["logs"], ["logs", "--follow"], ["cancel"]], ids=" ".join)
def test_a_folder_without_job_json_is_one_line(command: list[str], tmp_path: Path) -> None:
    result = wmlp("slurm", *command, str(tmp_path))
    assert result.exit_code == 2, result.output
    assert result.stderr == f"wmlp: error: {tmp_path}: no job.json here: not a run folder of `wmlp slurm submit`\n"


def test_neither_a_folder_nor_a_job_id_is_one_line(tmp_path: Path) -> None:
    result = wmlp("slurm", "status", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert result.stderr == f"wmlp: error: {tmp_path / 'nowhere'}: neither a run folder nor a job id\n"


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------- on the real cluster


def submit(cluster: LocalSlurmCluster, workdir: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.chdir(workdir)
    result = wmlp("slurm", "submit", "--recipe", "cpu", "--set", "cluster.cpus_per_task=2", *args,
                  env={**cluster.env, **child_env()})
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().isdigit(), result.stdout
    return result.stdout.strip()


def report(cluster: LocalSlurmCluster, workdir: Path) -> str:
    parts = [f"{p}:\n{p.read_text(errors='replace')}" for p in sorted(workdir.rglob("*"))
             if p.is_file() and p.suffix in (".out", ".err", ".log")]
    return "\n".join(parts) + "\n" + cluster.logs()


@pytest.mark.slurm
@pytest.mark.parametrize("command", ["status", "cancel"])
def test_a_job_id_slurm_does_not_know_is_one_line(command: str, slurm_cluster: LocalSlurmCluster) -> None:
    result = wmlp("slurm", command, "987654", env=slurm_cluster.env)
    assert result.exit_code == 2, result.output
    assert result.stderr == ("wmlp: error: job 987654: Slurm does not know it (ended long ago, or another "
                             "cluster's)\n")


@pytest.mark.slurm
@pytest.mark.slow
def test_status_and_logs_follow_a_job_to_its_end(
    slurm_cluster: LocalSlurmCluster, mini_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = submit(slurm_cluster, tmp_path, monkeypatch, *quick_sets(mini_data, 6),
                    "--set", "augment.repeated_aug=false")  # 80 images: fewer than the sampler's 256
    run_dir = tmp_path / "runs" / f"cpu-{job_id}"
    record = json.loads((run_dir / "job.json").read_text())
    assert record["job_id"] == job_id and record["cluster"] is None and record["history"] == []
    assert record["submit_dir"] == str(tmp_path) and record["job_name"] == "wmlp-cpu"

    early = wmlp("slurm", "status", "--format", "json", job_id, env=slurm_cluster.env)
    assert early.exit_code == 0, early.output
    # Still queued or starting (torch takes seconds to import): `logs --follow` below starts on a live job.
    assert json.loads(early.stdout)["state"] in ("PENDING", "CONFIGURING", "RUNNING"), early.stdout

    # The real command, as a process: it must return by itself once the job has ended.
    env = {**slurm_cluster.env, **child_env()}
    follow = subprocess.run([sys.executable, "-m", "wavemlp.cli", "slurm", "logs", "--follow", str(run_dir)],
                            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=420)
    state = slurm_cluster.state(int(job_id))
    assert follow.returncode == 0, follow.stderr
    assert state in FINAL_STATES, f"`logs --follow` returned while the job was {state}"
    assert state == "COMPLETED", report(slurm_cluster, tmp_path)
    out = follow.stdout
    assert f"==> {tmp_path}/wmlp-cpu-{job_id}.err <==" in out
    assert f"==> {run_dir}/logs/{job_id}-restart0-node0.log <==" in out
    assert "rank 0 weights sha256 " in out  # the trainer's very last line
    assert f"wmlp: job {job_id} start 0 ended with status 0" in out  # the batch script's

    node_only = wmlp("slurm", "logs", "--node", "0", str(run_dir))
    assert node_only.exit_code == 0 and "rank 0 weights sha256 " in node_only.stdout
    assert ".err <==" not in node_only.stdout and ".out <==" not in node_only.stdout

    text = wmlp("slurm", "status", str(run_dir), env=slurm_cluster.env)
    assert text.exit_code == 0, text.output
    lines = dict(line.split(":", 1) for line in text.stdout.splitlines())
    assert lines["job"].strip() == job_id and lines["state"].strip().startswith("COMPLETED (from ")
    assert lines["restarts"].strip() == "0" and lines["nodes"].strip() == "n1"
    assert lines["run folder"].strip() == str(run_dir)
    assert lines["checkpoint"].strip().startswith(f"{run_dir}/checkpoints/")

    status = json.loads(wmlp("slurm", "status", "--format", "json", str(run_dir), env=slurm_cluster.env).stdout)
    assert status["job_id"] == job_id and status["state"] == "COMPLETED" and status["restarts"] == 0
    assert status["nodes"] == "n1" and status["run_dir"] == str(run_dir)
    assert Path(status["checkpoint"]).is_file() and Path(status["checkpoint"]).parent == run_dir / "checkpoints"
    assert status["last_step"]["global_step"] == 6


@pytest.mark.slurm
@pytest.mark.slow
def test_cancel_checkpoints_a_running_job_and_it_does_not_requeue(
    slurm_cluster: LocalSlurmCluster, demo_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = tmp_path / "run"
    job_id = submit(slurm_cluster, tmp_path, monkeypatch, "--run-dir", str(run_dir), *quick_sets(demo_data, 400))
    steps = run_dir / "steps.jsonl"
    deadline = time.monotonic() + 300
    while not (steps.is_file() and len(steps.read_text().splitlines()) >= 2):
        assert slurm_cluster.state(int(job_id)) in ("PENDING", "CONFIGURING", "RUNNING"), report(slurm_cluster,
                                                                                                    tmp_path)
        assert time.monotonic() < deadline, "no training steps after 300 s\n" + report(slurm_cluster, tmp_path)
        time.sleep(0.2)

    # By job id: the run folder comes from the batch script's first line in its .err file.
    by_id = json.loads(wmlp("slurm", "status", "--format", "json", job_id, env=slurm_cluster.env).stdout)
    assert by_id["state"] == "RUNNING" and by_id["run_dir"] == str(run_dir) and by_id["restarts"] == 0, by_id

    result = wmlp("slurm", "cancel", str(run_dir), "--timeout", "120", env=slurm_cluster.env)
    assert result.exit_code == 0, result.output
    assert (run_dir / ".cancel").read_text() == f"{job_id}\n"
    assert result.stdout.startswith(f"job {job_id}: USR1 sent to the batch script"), result.stdout
    assert "still RUNNING after" not in result.stdout, result.stdout  # the checkpoint came in time

    checkpoints = sorted((run_dir / "checkpoints").glob("last*"))
    assert checkpoints, report(slurm_cluster, tmp_path)
    node_log = (run_dir / "logs" / f"{job_id}-restart0-node0.log").read_text()
    assert "preempted (stop file" in node_log and "saved" in node_log, node_log
    state = slurm_cluster.state(int(job_id))
    assert state not in ("PENDING", "RUNNING", "CONFIGURING", "REQUEUED"), state
    assert not os.path.exists(run_dir / "logs" / f"{job_id}-restart1-node0.log")
    # The batch script honours <run dir>/.cancel: no `scontrol requeue`, so `cancel` never has to scancel a
    # new start (it would say "requeued itself").
    assert "requeued itself" not in result.stdout, result.stdout
    assert result.stdout.splitlines()[-1].startswith(f"job {job_id} ended ("), result.stdout
    assert slurm_cluster.job_field(int(job_id), "Restarts") == "0"
    batch_log = (tmp_path / f"wmlp-cpu-{job_id}.err").read_text()
    assert f"job {job_id} cancelled (wmlp slurm cancel) after a checkpoint: not requeued" in batch_log, batch_log
