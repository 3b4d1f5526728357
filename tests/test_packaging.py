"""`pip install .` (not editable) gives a working `wmlp` that carries its recipes and templates."""
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_install_into_a_fresh_venv(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheel_dir), str(ROOT)], check=True, capture_output=True, text=True)
    wheel = next(wheel_dir.glob("wavemlp_kit-*.whl"))
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
    run = dict(capture_output=True, text=True, cwd=elsewhere, timeout=300)
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
