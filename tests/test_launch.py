"""`wmlp launch` for real: torchrun with gloo processes training on the demo data, signals and exit codes through
torchrun, concurrent launches on one host, and the dry-run golden."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.infra.render_tools import (
    GOLDEN,
    check_golden,
    child_env,
    processes_mentioning,
    quick_sets,
    rank_checksums,
    wait_for_lines,
    wmlp,
)
from wavemlp.engine.signals import REQUEUE_EXIT_CODE, exit_file


def test_dry_run_matches_golden() -> None:
    result = wmlp("launch", "--recipe", "bi-v150", "--nodes", "2", "--node-rank", "1", "--master-addr", "node001",
                  "--run-dir", "/shared/runs/wavemlp", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("#   bash /shared/runs/wavemlp/launch-node1.sh\n")
    assert "--nproc_per_node=16" in result.stdout and "export NCCL_SHM_DISABLE=1" in result.stdout
    check_golden(GOLDEN / "launch" / "bi-v150.dry-run.txt", result.stdout)
    assert not Path("/shared/runs/wavemlp").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_cpu_launch_trains_two_gloo_ranks_to_identical_weights(tmp_path: Path, demo_data: Path) -> None:  # noqa: F811
    run_dir = tmp_path / "run"
    result = wmlp("launch", "--recipe", "cpu", "--nodes", "1", "--gpus", "2", "--run-dir", str(run_dir),
                  *quick_sets(demo_data, 3), env=child_env())
    log = (run_dir / "logs" / "node0.log").read_text()
    assert result.exit_code == 0, log
    assert "training WaveMLP_T_dw on 2 x cpu" in log
    checksums = rank_checksums(log)
    assert sorted(checksums) == [0, 1], log
    assert len(set(checksums.values())) == 1, checksums
    steps = (run_dir / "steps.jsonl").read_text().splitlines()
    assert len(steps) == 3
    assert (run_dir / "launch-node0.sh").is_file() and list((run_dir / "checkpoints").glob("*.pth"))


# ------------------------------------------------------------------ signals, exit codes, rendezvous


@contextlib.contextmanager
def launched(wmlp_exe: str, run_dir: Path, *args: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    """The installed `wmlp launch` as a real process, its output in a file beside the run folder. Whatever
    the test's outcome, no process of this run (script, torchrun, trainers, tee) outlives it."""
    output = run_dir.with_name(run_dir.name + ".out")
    with open(output, "w") as out:
        proc = subprocess.Popen([wmlp_exe, "launch", "--recipe", "cpu", "--run-dir", str(run_dir), *args],
                                env={**os.environ, **child_env()}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        yield proc, output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in processes_mentioning(str(run_dir)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
@pytest.mark.parametrize("sig,to_group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["TERM-to-wmlp-launch", "INT-to-its-group-as-Ctrl-C"])
def test_a_signal_to_wmlp_launch_makes_the_trainers_checkpoint_and_exit_75(
    sig: signal.Signals, to_group: bool, wmlp_exe: str, demo_data: Path, tmp_path: Path  # noqa: F811
) -> None:
    run_dir = tmp_path / "run"
    with launched(wmlp_exe, run_dir, "--gpus", "2", *quick_sets(demo_data, 400), "--set", "data.workers=1") as (
            proc, output):
        wait_for_lines(run_dir / "steps.jsonl", 2, proc, timeout=300, output=output)
        if to_group:  # the launcher, its script, torchrun and tee (torchrun gives the trainers a session)
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=180)
        out = output.read_text()
        log = (run_dir / "logs" / "node0.log").read_text()
        assert proc.returncode == REQUEUE_EXIT_CODE, out
        assert f"wmlp launch: {sig.name[3:]} received" in out and "the trainers exited 75" in out, out
        stop = re.search(r"preempted \(.+\): checkpoint at epoch 0 step (\d+) saved", log)
        assert stop, log
        assert (run_dir / "checkpoints" / f"last-e0000-s{int(stop.group(1)):07d}.pth").is_file()
        assert [exit_file(run_dir, r).read_text() for r in (0, 1)] == ["75\n", "75\n"]
        assert not processes_mentioning(str(run_dir)), "processes of the run outlived wmlp launch"
        # The trainers ran from the resolved recipe written beside the script, and said so.
        recipe = run_dir / "launch-node0.recipe.yaml"
        assert f"recipe {recipe} sha256 {hashlib.sha256(recipe.read_bytes()).hexdigest()}" in log, log
        assert json.loads((run_dir / "env.json").read_text())["recipe_file"] == str(recipe)


@pytest.mark.slow
def test_two_single_node_launches_on_one_host_each_meet_on_their_own_port(
    wmlp_exe: str, demo_data: Path, tmp_path: Path  # noqa: F811
) -> None:
    """With a fixed port the second launch would join the first one's rendezvous store and die with it."""
    first, second = tmp_path / "first", tmp_path / "second"
    with launched(wmlp_exe, first, "--gpus", "1", *quick_sets(demo_data, 60)) as (proc1, out1):
        wait_for_lines(first / "steps.jsonl", 1, proc1, timeout=300, output=out1)  # its store is up
        with launched(wmlp_exe, second, "--gpus", "1", *quick_sets(demo_data, 120)) as (proc2, out2):
            assert proc1.wait(timeout=300) == 0, out1.read_text()
            assert proc2.wait(timeout=300) == 0, out2.read_text()
    assert len((first / "steps.jsonl").read_text().splitlines()) == 60
    assert len((second / "steps.jsonl").read_text().splitlines()) == 120


@pytest.mark.slow
def test_bad_input_exits_2_through_torchrun(wmlp_exe: str, tmp_path: Path) -> None:
    """torchrun turns any failed trainer into its own status 1; the script restores the trainers' 2."""
    data = tmp_path / "no-train-split"
    (data / "val" / "0").mkdir(parents=True)
    run_dir = tmp_path / "run"
    with launched(wmlp_exe, run_dir, "--gpus", "2", *quick_sets(data, 2)) as (proc, output):
        proc.wait(timeout=300)
    out = output.read_text()
    assert proc.returncode == 2, out
    assert "torchrun exited 1; the trainers exited 2" in out, out
    assert [exit_file(run_dir, r).read_text() for r in (0, 1)] == ["2\n", "2\n"]
