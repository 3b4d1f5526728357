"""The local Slurm test cluster (tests/infra/slurm.py) against real Slurm daemons: no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.infra import slurm as slurm_infra

LocalSlurmCluster = slurm_infra.LocalSlurmCluster
require_slurm = slurm_infra.require_slurm


def _write_script(path: Path, body: str) -> Path:
    path.write_text(textwrap.dedent(body).lstrip())
    path.chmod(0o755)
    return path


def _wait_for_file(path: Path, cluster: LocalSlurmCluster, job_id: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() >= deadline:
            state = cluster.state(job_id)
            raise TimeoutError(f"{path} not written by job {job_id} ({state}) within {timeout:.0f}s\n{cluster.logs()}")
        time.sleep(0.1)


def _hosts_lines_for(workdir: Path) -> list[str]:
    return [
        line
        for line in slurm_infra.HOSTS_FILE.read_text().splitlines()
        if slurm_infra.HOSTS_MARK in line and f"dir={workdir}" in line
    ]


def _pid_files(cluster: LocalSlurmCluster) -> dict[str, int]:
    pids = {}
    for path in cluster.run_dir.glob("*.pid"):
        pids[path.stem] = int(path.read_text().strip())
    return pids


# ------------------------------------------------------------------------ availability rule (no Slurm)


def test_require_slurm_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_infra, "_which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI must run the Slurm tests.*install-slurm\.sh"):
        require_slurm()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=r"bash \.ci/install-slurm\.sh"):
        require_slurm()


def test_parse_scontrol_record_keeps_spaces_and_nested_equals() -> None:
    record = slurm_infra.parse_scontrol_record(
        "JobId=7 JobName=my job JobState=CANCELLED Reason=None TRES=cpu=2,node=2,gres/gpu=4 Restarts=1"
    )
    assert record["JobName"] == "my job"
    assert record["JobState"] == "CANCELLED"
    assert record["TRES"] == "cpu=2,node=2,gres/gpu=4"
    assert record["Restarts"] == "1"


# --------------------------------------------------------------------------- shared 4-node cluster


@pytest.mark.slurm
def test_all_nodes_idle_with_eight_gpus(slurm_cluster: LocalSlurmCluster) -> None:  # noqa: F811
    slurm_cluster.wait_idle()
    nodes = slurm_cluster.node_info()
    assert sorted(nodes) == ["n1", "n2", "n3", "n4"]
    for name, node in nodes.items():
        assert node["State"] == "IDLE", (name, node["State"])
        assert node["Gres"] == "gpu:8", (name, node["Gres"])
        assert node["CPUTot"] == "2"
        assert node["Partitions"] == "debug"
        # Rendezvous code (MASTER_ADDR=n1) needs the node names to resolve.
        assert socket.gethostbyname(name) == "127.0.0.1"
    partitions = slurm_cluster.run(["sinfo", "-h", "-o", "%P"]).stdout.split()
    assert partitions == ["debug*"]
    assert os.environ.get("SLURM_CONF") != str(slurm_cluster.conf_path), "the cluster must not leak into os.environ"


@pytest.mark.slurm
def test_two_node_gpu_batch_job(slurm_cluster: LocalSlurmCluster, tmp_path: Path) -> None:  # noqa: F811
    script = _write_script(
        tmp_path / "two_nodes.sbatch",
        """
        #!/bin/bash
        #SBATCH --job-name=two-nodes
        #SBATCH --nodes=2
        #SBATCH --ntasks-per-node=1
        #SBATCH --gres=gpu:2
        #SBATCH --output=slurm-%j.out
        set -euo pipefail
        out="$1"
        scontrol show hostnames "$SLURM_JOB_NODELIST" > "$out/hostnames.txt"
        srun bash -c 'printf "%s\\n" "$SLURMD_NODENAME" "$SLURM_PROCID" "$SLURM_NODEID" "$CUDA_VISIBLE_DEVICES" \\
            > "$0/task-$SLURM_PROCID.txt"' "$out"
        """,
    )
    job_id = slurm_cluster.submit(script, tmp_path)
    state = slurm_cluster.wait(job_id, timeout=30)
    output = (tmp_path / f"slurm-{job_id}.out").read_text() if (tmp_path / f"slurm-{job_id}.out").exists() else ""
    assert state == "COMPLETED", f"{state}\n{output}\n{slurm_cluster.logs()}"

    hostnames = (tmp_path / "hostnames.txt").read_text().split()
    assert len(hostnames) == 2
    assert len(set(hostnames)) == 2
    assert set(hostnames) <= {"n1", "n2", "n3", "n4"}
    tasks = {}
    for path in sorted(tmp_path.glob("task-*.txt")):
        node, procid, nodeid, cuda = path.read_text().splitlines()
        tasks[int(procid)] = (node, int(nodeid), cuda.split(","))
    assert set(tasks) == {0, 1}
    assert {node for node, _, _ in tasks.values()} == set(hostnames)
    assert {nodeid for _, nodeid, _ in tasks.values()} == {0, 1}
    for node, _, gpus in tasks.values():
        assert len(gpus) == 2, (node, gpus)
    assert sorted(
        slurm_cluster.run(["scontrol", "show", "hostnames", slurm_cluster.job_field(job_id, "NodeList")]).stdout.split()
    ) == sorted(hostnames)


@pytest.mark.slurm
def test_task_prolog_points_tasks_at_their_nodes_docker_engine_only_when_it_runs(
    slurm_cluster: LocalSlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The TaskProlog: while per-node engines run, DOCKER_HOST of node nK's engine for the batch script and
    every task on nK, or none on a node without one (not the batch node's, which srun tasks inherit);
    without node engines, what the job inherited."""
    script = _write_script(
        tmp_path / "prolog.sbatch",
        """
        #!/bin/bash
        #SBATCH --nodes=2
        #SBATCH --ntasks-per-node=1
        #SBATCH --output=prolog-%j.out
        echo "batch $SLURMD_NODENAME ${DOCKER_HOST:-unset}"
        srun bash -c 'echo "task $SLURMD_NODENAME ${DOCKER_HOST:-unset}"'
        """,
    )
    sockets = slurm_cluster.node_docker_dir
    engines_run = sockets.exists()  # this session's node engines (tests/infra/node_docker.py), for n1 and n2

    def run(nodes: str) -> list[str]:
        slurm_cluster.wait_idle()
        job_id = slurm_cluster.submit(script, cwd=tmp_path, sbatch_args=[f"--nodelist={nodes}"],
                                      env_extra={"DOCKER_HOST": "unix:///inherited.sock"})
        state = slurm_cluster.wait(job_id, timeout=30)
        output = (tmp_path / f"prolog-{job_id}.out").read_text()
        assert state == "COMPLETED", f"{output}\n{slurm_cluster.logs()}"
        return sorted(output.splitlines())

    if not engines_run:
        assert run("n3,n4") == ["batch n3 unix:///inherited.sock", "task n3 unix:///inherited.sock",
                                "task n4 unix:///inherited.sock"]
        sockets.mkdir()
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(sockets / "n3.sock"))
        assert run("n3,n4") == [f"batch n3 unix://{sockets}/n3.sock", f"task n3 unix://{sockets}/n3.sock",
                                "task n4 unset"]
    finally:
        listener.close()
        if engines_run:
            (sockets / "n3.sock").unlink()
        else:
            shutil.rmtree(sockets)


@pytest.mark.slurm
def test_usr1_to_batch_shell_requeues_and_second_run_completes(
    slurm_cluster: LocalSlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    script = _write_script(
        tmp_path / "requeue.sbatch",
        """
        #!/bin/bash
        #SBATCH --job-name=requeue
        #SBATCH --nodes=1
        #SBATCH --requeue
        #SBATCH --open-mode=append
        #SBATCH --output=job.out
        restart="${SLURM_RESTART_COUNT:-0}"
        echo "run $restart started on $SLURMD_NODENAME"
        if [ "$restart" = 0 ]; then
            # Requeue ourselves on USR1, the way a preemption handler hands the job back to Slurm.
            trap 'echo "run 0 got USR1"; scontrol requeue "$SLURM_JOB_ID"; exit 0' USR1
            touch run0.ready
            # Waiting on a background sleep lets bash run the trap as soon as the signal arrives.
            while true; do sleep 1 & wait $!; done
        fi
        echo "run $restart finished"
        """,
    )
    job_id = slurm_cluster.submit(script, cwd=tmp_path)
    _wait_for_file(tmp_path / "run0.ready", slurm_cluster, job_id)
    assert slurm_cluster.state(job_id) == "RUNNING"

    slurm_cluster.signal(job_id, "USR1", batch_only=True)
    # The requeued job may not start before cred_expire (5 s) has passed.
    state = slurm_cluster.wait(job_id, timeout=40)
    output = (tmp_path / "job.out").read_text()
    assert state == "COMPLETED", f"{state}\n{output}\n{slurm_cluster.logs()}"
    assert slurm_cluster.job_field(job_id, "Restarts") == "1"
    lines = output.splitlines()
    assert lines[0].startswith("run 0 started on n")
    assert "run 0 got USR1" in lines
    assert any(line.startswith("run 1 started on n") for line in lines)
    assert lines[-1] == "run 1 finished"
    assert "run 0 finished" not in lines


@pytest.mark.slurm
def test_full_signal_reaches_steps_and_cancel_ends_job(
    slurm_cluster: LocalSlurmCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    script = _write_script(
        tmp_path / "steps.sbatch",
        """
        #!/bin/bash
        #SBATCH --nodes=2
        #SBATCH --ntasks-per-node=1
        #SBATCH --output=steps.out
        trap 'touch batch.usr2' USR2
        srun bash -c 'trap "touch step-$SLURM_PROCID.usr2" USR2; touch step-$SLURM_PROCID.ready
            while true; do sleep 1 & wait $!; done' &
        while true; do sleep 1 & wait $!; done
        """,
    )
    job_id = slurm_cluster.submit(script, cwd=tmp_path)
    slurm_cluster.wait_running(job_id, timeout=20)
    for procid in (0, 1):
        _wait_for_file(tmp_path / f"step-{procid}.ready", slurm_cluster, job_id)
    slurm_cluster.signal(job_id, signal.SIGUSR2, batch_only=False)
    for name in ("batch.usr2", "step-0.usr2", "step-1.usr2"):
        _wait_for_file(tmp_path / name, slurm_cluster, job_id)
    assert slurm_cluster.state(job_id) == "RUNNING"

    slurm_cluster.cancel(job_id)
    assert slurm_cluster.wait(job_id, timeout=20) == "CANCELLED"


# ------------------------------------------------------------- own small clusters: the lifecycle


@pytest.fixture
def needs_slurm() -> None:
    require_slurm()


@pytest.mark.slurm
@pytest.mark.usefixtures("needs_slurm")
def test_stop_cleans_up_and_is_idempotent(tmp_path: Path) -> None:
    # More CPUs than this machine has: config_overrides lets fake nodes be as big as a test needs.
    cluster = LocalSlurmCluster(tmp_path / "c", nodes=1, gpus_per_node=1, cpus_per_node=16, memory_mb=4096)
    with cluster:
        node = cluster.node_info()["n1"]
        assert (node["CPUTot"], node["RealMemory"], node["Gres"]) == ("16", "4096", "gpu:1")
        assert len(_hosts_lines_for(cluster.workdir)) == 1
        pids = _pid_files(cluster)
        assert set(pids) == {"munged", "slurmctld", "slurmd-n1"}
        job_id = cluster.submit(_write_script(tmp_path / "sleep.sbatch", "#!/bin/bash\nsleep 300\n"))
        cluster.wait_running(job_id, timeout=20)
    cluster.stop()
    for name, pid in pids.items():
        assert not slurm_infra._pid_alive(pid), f"{name} ({pid}) survived stop()"
    assert cluster._marked_pids() == [], "job processes survived stop()"
    assert _hosts_lines_for(cluster.workdir) == []
    for path in (cluster.run_dir, cluster.state_dir, cluster.spool_dir, cluster.munge_dir):
        assert not path.exists(), f"{path} left behind"
    assert "slurmctld.log" in cluster.logs()


@pytest.mark.slurm
@pytest.mark.usefixtures("needs_slurm")
def test_start_takes_over_leftovers_in_same_workdir(tmp_path: Path) -> None:
    crashed = LocalSlurmCluster(tmp_path / "c", nodes=1, gpus_per_node=0)
    crashed.start()
    old_pids = _pid_files(crashed)
    # A second cluster object in the same workdir stands for a new run after a crash that never
    # called stop(): it must clear the old daemons and /etc/hosts line before it starts its own.
    cluster = LocalSlurmCluster(tmp_path / "c", nodes=1, gpus_per_node=0)
    try:
        cluster.start()
        for name, pid in old_pids.items():
            assert not slurm_infra._pid_alive(pid), f"leftover {name} ({pid}) still running"
        assert len(_hosts_lines_for(cluster.workdir)) == 1
        assert cluster.run(["srun", "-N1", "printenv", "SLURMD_NODENAME"]).stdout.strip() == "n1"
    finally:
        cluster.stop()
        crashed.stop()
    assert _hosts_lines_for(cluster.workdir) == []


@pytest.mark.slurm
@pytest.mark.usefixtures("needs_slurm")
def test_failed_start_leaves_nothing_behind(tmp_path: Path) -> None:
    cluster = LocalSlurmCluster(tmp_path / "c", nodes=1, gpus_per_node=0, extra_conf={"SelectType": "select/bogus"})
    with pytest.raises(slurm_infra.SlurmStartError, match="slurmctld exited"):
        cluster.start()
    assert cluster._marked_pids() == []
    assert _hosts_lines_for(cluster.workdir) == []
    cluster.stop()


@pytest.mark.slurm
@pytest.mark.usefixtures("needs_slurm")
def test_state_of_purged_job_comes_from_job_completion_log(tmp_path: Path) -> None:
    # MinJobAge=2 lets slurmctld forget finished jobs within seconds instead of 5 minutes.
    with LocalSlurmCluster(tmp_path / "c", nodes=1, gpus_per_node=0, extra_conf={"MinJobAge": "2"}) as cluster:
        script = _write_script(tmp_path / "fail.sbatch", "#!/bin/bash\nexit 3\n")
        job_id = cluster.submit(script)
        assert cluster.wait(job_id, timeout=20) == "FAILED"
        deadline = time.monotonic() + 40
        while cluster.job_info(job_id) is not None:
            assert time.monotonic() < deadline, "slurmctld did not purge the finished job"
            time.sleep(0.5)
        assert cluster.state(job_id) == "FAILED"
        with pytest.raises(subprocess.CalledProcessError):
            cluster.run(["scontrol", "show", "job", str(job_id)])


@pytest.mark.slurm
@pytest.mark.usefixtures("needs_slurm")
def test_start_kills_daemons_orphaned_by_a_crashed_session(tmp_path: Path) -> None:
    crashed_dir = tmp_path / "crashed"
    # A session that dies without cleanup (os._exit skips atexit and fixtures) leaves its daemons
    # running and its /etc/hosts line behind.
    code = textwrap.dedent(
        f"""
        import json, os
        from pathlib import Path
        from tests.infra.slurm import LocalSlurmCluster
        cluster = LocalSlurmCluster(Path({str(crashed_dir)!r}), nodes=1, gpus_per_node=0).start()
        pids = {{p.stem: int(p.read_text()) for p in cluster.run_dir.glob("*.pid")}}
        print(json.dumps(pids), flush=True)
        os._exit(0)
        """
    )
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    orphans = json.loads(result.stdout)
    assert orphans and all(slurm_infra._pid_alive(pid) for pid in orphans.values())
    assert len(_hosts_lines_for(crashed_dir.resolve())) == 1

    with LocalSlurmCluster(tmp_path / "next", nodes=1, gpus_per_node=0):
        for name, pid in orphans.items():
            assert not slurm_infra._pid_alive(pid), f"orphaned {name} ({pid}) still running"
        assert _hosts_lines_for(crashed_dir.resolve()) == []
        assert not slurm_infra._munge_dir_for(crashed_dir.resolve()).exists()
