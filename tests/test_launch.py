"""`wmlp launch` for real: torchrun with gloo processes training on the demo data, and the dry-run golden."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from tests.infra.render_tools import GOLDEN, ROOT, check_golden, wmlp

# A few steps of the cpu recipe on the digits demo: small images, tiny batches, one epoch, no eval-heavy
# extras. Shared with the Slurm job tests.
QUICK = [
    "model.img_size=32",
    "model.num_classes=10",
    "train.epochs=1",
    "sched.warmup_epochs=0",
    "sched.cooldown_epochs=0",
    "train.batch_size=8",
    "data.workers=0",
    "train.progress=false",
    "train.log_interval=1",
    "env.OMP_NUM_THREADS=1",
]


def quick_sets(data: Path, steps: int) -> list[str]:
    sets = [*QUICK, f"data.path={data}", f"train.max_steps_per_epoch={steps}"]
    return [a for s in sets for a in ("--set", s)]


def rank_checksums(log_text: str) -> dict[int, str]:
    """Rank -> weights checksum, from the line every rank prints when training ends."""
    found = re.findall(r"rank (\d+) weights sha256 ([0-9a-f]{64})", log_text)
    return {int(rank): digest for rank, digest in found}


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from wavemlp.data import write_demo_dataset

    out = tmp_path_factory.mktemp("demo") / "digits"
    write_demo_dataset(str(out))
    return out


def child_env() -> dict[str, str]:
    """Trainers must import this checkout's wavemlp with this interpreter."""
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {"PYTHONPATH": path, "WMLP_PYTHON": sys.executable}


def test_dry_run_matches_golden() -> None:
    result = wmlp("launch", "--recipe", "bi-v150", "--nodes", "2", "--node-rank", "1", "--master-addr", "node001",
                  "--run-dir", "/shared/runs/wavemlp", "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("#   bash /shared/runs/wavemlp/launch-node1.sh\n")
    assert "--nproc_per_node=16" in result.stdout and "export NCCL_SHM_DISABLE=1" in result.stdout
    check_golden(GOLDEN / "launch" / "bi-v150.dry-run.txt", result.stdout)
    assert not Path("/shared/runs/wavemlp").exists()  # a dry run writes nothing


@pytest.mark.slow
def test_cpu_launch_trains_two_gloo_ranks_to_identical_weights(tmp_path: Path, demo_data: Path) -> None:
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
