"""`wmlp launch` for real: torchrun with gloo processes training on the demo data, and the dry-run golden."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.infra.render_tools import (
    GOLDEN,
    check_golden,
    child_env,
    quick_sets,
    rank_checksums,
    wmlp,
)


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
