"""`pip install .` (not editable) gives a working `wmlp` that carries its recipes, templates and Dockerfiles."""
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_install_into_a_fresh_venv(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True, text=True)
    wheel = next(wheel_dir.glob("wavemlp_kit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    # Every package of the source tree, found without a hand-kept list.
    for init in sorted(ROOT.glob("wavemlp/**/__init__.py")):
        assert str(init.relative_to(ROOT)) in names, f"{init.relative_to(ROOT)} is not in the wheel"
    for shipped in ("recipes/bi-v150.yaml", "launch/torchrun.sh.j2", "slurm/job.sbatch.j2", "docker/Dockerfile.cuda",
                    "docker/Dockerfile.corex", "docker/constraints/bi-v150.txt", "pyproject.toml"):
        assert "wavemlp/_kit/" + shipped in names, f"the wheel lacks {shipped}"
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The heavy dependencies (torch ...) come from the test environment through a .pth file: what is
    # under test is the kit's own wheel, installed without its source tree.
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    wmlp = venv / "bin" / "wmlp"
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    # A cache of its own: the image build stages its context there from the installed files.
    run = dict(capture_output=True, text=True, cwd=elsewhere, timeout=300,
               env=dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache")))
    out = subprocess.run([str(py), "-c", "import wavemlp, wavemlp.resources as r; print(wavemlp.__file__); "
                          "print(r.resource_dir('recipes')); print(r.resource_dir('launch'))"], **run)
    assert out.returncode == 0, out.stderr
    pkg, recipes, launch = out.stdout.split()
    assert str(venv) in pkg and str(ROOT) not in pkg
    assert Path(recipes, "imagenet.yaml").is_file() and Path(recipes, "cpu-demo.yaml").is_file()
    assert str(venv) in launch
    out = subprocess.run([str(wmlp), "profile", "--model", "WaveMLP_T_dw"], **run)
    assert out.returncode == 0 and "15,286,472" in out.stdout, out.stderr
    out = subprocess.run([str(wmlp), "smoke", "--recipe", "imagenet", "--img-size", "64"], **run)
    assert out.returncode == 0 and '"ok": true' in out.stdout, out.stderr
    out = subprocess.run([str(wmlp), "recipes", "list"], **run)
    assert out.returncode == 0 and out.stdout.startswith("a100 ") and "imagenet" in out.stdout, out.stderr
    out = subprocess.run([str(wmlp), "slurm", "render", "--recipe", "bi-v150", "--set", "data.path=/d"], **run)
    assert out.returncode == 0 and "#SBATCH --gres=gpu:16" in out.stdout, out.stderr
    out = subprocess.run([str(wmlp), "image", "build", "--gpu", "bi-v150", "--print"], **run)
    assert out.returncode == 0, out.stderr
    context = Path(out.stdout.split()[-1])
    assert out.stdout.startswith("docker build ") and str(tmp_path / "cache") in str(context), out.stdout
    for needed in ("pyproject.toml", "docker/Dockerfile.corex", "docker/constraints/bi-v150.txt",
                   "wavemlp/image/provision.py", "recipes/bi-v150.yaml", "slurm/job.sbatch.j2"):
        assert (context / needed).is_file(), f"the staged build context lacks {needed}"
    assert not (context / "wavemlp" / "_kit").exists()
