"""Stopping a real training run with signals, as a terminal, Slurm or torchrun sends them: to every process
of the job, data-loader workers included. The run must finish its step, checkpoint, record and exit 75.

Real `wmlp train` processes on the mini digits and a real local Slurm cluster; waits poll files and states.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import FAST
from tests.infra.render_tools import child_env, processes_mentioning, quick_sets, wait_for_lines, wmlp
from tests.infra.slurm import LocalSlurmCluster
from wavemlp.engine.signals import REQUEUE_EXIT_CODE, exit_file, recorded_exit_code
from wavemlp.recipe import shipped_recipes

STOPPED = re.compile(r"preempted \((SIG\w+)\): checkpoint at epoch (\d+) step (\d+) saved; exiting 75")


def start_train(wmlp_exe: str, data: Path, run_dir: Path, *sets: str) -> subprocess.Popen:
    """`wmlp train` in a session (and process group) of its own, like a job step or a terminal's job."""
    cmd = [wmlp_exe, "train", "--recipe", "cpu-demo", "--data", str(data), "--run-dir", str(run_dir)]
    for s in [*FAST, *sets]:
        cmd += ["--set", s]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def assert_stopped_with_checkpoint(output: str, run_dir: Path, signal_name: str) -> None:
    """The stop line names the signal, and the checkpoint it announces is on disk."""
    found = STOPPED.search(output)
    assert found, output
    assert found.group(1) == signal_name, output
    epoch, step = int(found.group(2)), int(found.group(3))
    assert (run_dir / "checkpoints" / f"last-e{epoch:04d}-s{step:07d}.pth").is_file(), output
    assert exit_file(run_dir, 0).read_text() == f"{REQUEUE_EXIT_CODE}\n"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_to_the_whole_group_of_train_with_loader_workers_checkpoints_and_exits_75(
    sig: signal.Signals, wmlp_exe: str, mini_data: Path, tmp_path: Path
) -> None:
    """scancel, kill -TERM -PGID or Ctrl-C reach the loader's worker processes too: they must not die and
    take the trainer with them (`DataLoader worker (pid N) is killed by signal`)."""
    run_dir = tmp_path / "run"
    # Many epochs, no periodic checkpoints: the only checkpoint of epoch 0 is the one the stop writes.
    proc = start_train(wmlp_exe, mini_data, run_dir, "data.workers=2", "train.epochs=50",
                       "train.checkpoint_every_steps=0")
    wait_for_lines(run_dir / "steps.jsonl", 2, proc, timeout=180)
    workers = [pid for pid, cmd in processes_mentioning(str(run_dir)).items() if pid != proc.pid]
    assert len(workers) >= 2, "the data-loader workers should be running by now"

    os.killpg(proc.pid, sig)
    output, _ = proc.communicate(timeout=120)  # no hang on exit with persistent workers

    assert proc.returncode == REQUEUE_EXIT_CODE, output
    assert "killed by signal" not in output, output
    assert_stopped_with_checkpoint(output, run_dir, sig.name)
    assert not processes_mentioning(str(run_dir)), "worker processes outlived the trainer"

    # A recipe named by its shipped name is recorded as the shipped file (launch scripts name a resolved
    # file: tests/test_launch.py).
    shipped = shipped_recipes()["cpu-demo"]
    digest = hashlib.sha256(shipped.read_bytes()).hexdigest()
    env = json.loads((run_dir / "env.json").read_text())
    assert Path(env["recipe_file"]).resolve() == shipped.resolve() and env["recipe_sha256"] == digest
    assert f"recipe {env['recipe_file']} sha256 {digest}" in output


def test_a_second_ctrl_c_aborts_at_once(wmlp_exe: str, mini_data: Path, tmp_path: Path) -> None:
    """The first Ctrl-C asks for a checkpoint after the step; a second one means: do not wait."""
    run_dir = tmp_path / "run"
    # 224-pixel inputs: a step long enough that the second Ctrl-C comes while the first waits for it.
    proc = start_train(wmlp_exe, mini_data, run_dir, "train.epochs=50", "train.checkpoint_every_steps=0",
                       "model.img_size=224")
    wait_for_lines(run_dir / "steps.jsonl", 2, proc, timeout=180)
    os.killpg(proc.pid, signal.SIGINT)
    # Two signals sent at once would arrive as one: the second waits for the first one's line in train.log.
    deadline = time.monotonic() + 60
    while "SIGINT received: a checkpoint after this step" not in (run_dir / "train.log").read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "no line for the first Ctrl-C"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert output.rstrip().endswith("wmlp: aborted"), output
    assert not STOPPED.search(output), output  # it did not wait for the checkpoint


def test_the_launch_status_follows_the_exit_files(tmp_path: Path) -> None:
    """The priority a launch script applies (the shell copy is exercised by tests/test_launch.py)."""
    assert recorded_exit_code(tmp_path, 1) == 1  # nothing recorded: torchrun's status
    (tmp_path / ".exit").mkdir()
    for rank, code in enumerate(["75", "0", "3", "75"]):
        (tmp_path / ".exit" / f"rank{rank}").write_text(code + "\n")
    assert recorded_exit_code(tmp_path, 0) == 0
    assert recorded_exit_code(tmp_path, 1) == 3
    (tmp_path / ".exit" / "rank9").write_text("2\n")
    assert recorded_exit_code(tmp_path, 1) == 2


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_of_a_job_with_loader_workers_leaves_a_checkpoint(
    slurm_cluster: LocalSlurmCluster,  # noqa: F811
    demo_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain `scancel`: Slurm sends TERM to every process of the job (batch shell, srun, torchrun, the
    trainer, its loader workers), then KILL after KillWait. The trainer must checkpoint in between."""
    run_dir = tmp_path / "run"
    script = tmp_path / "job.sbatch"
    monkeypatch.chdir(tmp_path)
    rendered = wmlp("slurm", "render", "--recipe", "cpu", "--runtime", "none", "--nodes", "1", "--gpus", "1",
                    "--set", "cluster.cpus_per_task=2", "--run-dir", str(run_dir), "-o", str(script),
                    *quick_sets(demo_data, 400), "--set", "data.workers=2")
    assert rendered.exit_code == 0, rendered.output
    job_id = slurm_cluster.submit(script, cwd=tmp_path, env_extra=child_env())

    steps = run_dir / "steps.jsonl"
    deadline = time.monotonic() + 300
    while not (steps.is_file() and len(steps.read_text().splitlines()) >= 2):
        state = slurm_cluster.state(job_id)
        assert state in ("PENDING", "CONFIGURING", "RUNNING"), f"job {job_id} {state}:\n{slurm_cluster.logs()}"
        assert time.monotonic() < deadline, f"no steps after 300s:\n{slurm_cluster.logs()}"
        time.sleep(0.2)
    slurm_cluster.cancel(job_id)
    state = slurm_cluster.wait(job_id, timeout=120)

    logs = "".join(p.read_text(errors="replace") for p in sorted((run_dir / "logs").glob(f"{job_id}-*.log")))
    report = f"state {state}\n{logs}\n{slurm_cluster.logs()}"
    assert state == "CANCELLED", report
    assert "killed by signal" not in logs, report
    assert_stopped_with_checkpoint(logs, run_dir, "SIGTERM")
