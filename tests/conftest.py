import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# One Slurm cluster and one Docker engine for the whole session, whichever modules use them.
pytest_plugins = ["tests.infra.slurm", "tests.infra.docker", "tests.infra.node_docker"]

DATA = Path(__file__).resolve().parent / "data"
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(scope="session")
def state_dict_spec() -> dict:
    """Every state_dict key and shape per variant, as the spec lists them (a copy kept in tests/data)."""
    return json.loads((DATA / "wavemlp_state_dict.json").read_text())


@pytest.fixture
def wmlp_exe() -> str:
    """The installed console script of the environment running the tests."""
    exe = Path(sys.executable).with_name("wmlp")
    assert exe.is_file(), f"wmlp is not installed next to {sys.executable}: run make install"
    return str(exe)


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    """The embedded digits data set, written once per session through the real writer."""
    from wavemlp.data import write_demo_dataset

    root = tmp_path_factory.mktemp("digits")
    write_demo_dataset(root, image_size=32)
    return root


@pytest.fixture(scope="session")
def mini_data(demo_data, tmp_path_factory) -> Path:
    """A small copy of the digits (8 train / 4 val images per class): whole epochs in a second."""
    import shutil

    root = tmp_path_factory.mktemp("mini")
    for split, per_class in (("train", 8), ("val", 4)):
        for cls in sorted(p for p in (demo_data / split).iterdir() if p.is_dir()):
            dst = root / split / cls.name
            dst.mkdir(parents=True)
            for f in sorted(cls.iterdir())[:per_class]:
                shutil.copy(f, dst / f.name)
    return root


FAST = ["train.epochs=2", "train.batch_size=8", "data.workers=0", "train.progress=false", "sched.warmup_epochs=1"]


def wmlp_train(wmlp_exe, data, run_dir, *sets, resume=None, env_extra=None, check=True, recipe="cpu-demo"):
    """Run `wmlp train` as a real process; returns the CompletedProcess."""
    import subprocess

    cmd = [wmlp_exe, "train", "--recipe", recipe, "--data", str(data), "--run-dir", str(run_dir)]
    for s in list(FAST) + list(sets):
        cmd += ["--set", s]
    if resume:
        cmd += ["--resume", resume]
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out
