"""Site files: found by name or path, validated like recipes, and what they bring into a rendered job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.infra.render_tools import ROOT, wmlp, write

EXAMPLES = ROOT / "docs" / "sites"
DATA = ["--set", "data.path=/lustre/datasets/imagenet"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No site of this machine's user; rendering writes its resolved recipe into the test's folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("WMLP_SITES", raising=False)
    monkeypatch.delenv("WMLP_SITE", raising=False)


def test_sites_are_found_in_wmlp_sites_before_the_users_folder(tmp_path: Path, monkeypatch) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write(first / "hpc.yaml", "description: from a\npartition: pa\n")
    write(second / "hpc.yaml", "description: from b\npartition: pb\n")
    write(second / "other.yml", "description: only in b\n")
    write(tmp_path / "home" / ".config" / "wmlp" / "sites" / "mine.yaml", "description: the user's own\n")
    monkeypatch.setenv("WMLP_SITES", f"{first}:{second}")
    listing = wmlp("sites", "list").stdout.splitlines()
    assert [line.split()[0] for line in listing] == ["hpc", "other", "mine"]
    assert "from a" in listing[0] and str(first / "hpc.yaml") in listing[0]
    shown = wmlp("sites", "show", "hpc")
    assert shown.stdout == "description: from a\npartition: pa\n"
    resolved = yaml.safe_load(wmlp("sites", "show", "--resolved", "mine").stdout)
    assert resolved["runtime"] == "none" and "PATH" in resolved["export"]


def test_an_unknown_or_invalid_site_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = wmlp("slurm", "render", "--recipe", "cpu", "--site", "nowhere", *DATA)
    assert missing.exit_code == 2 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("wmlp: error: --site: 'nowhere' is not a file nor a site in ")
    bad = write(tmp_path / "bad.yaml", "partiton: gpu\n")
    result = wmlp("sites", "check", str(bad))
    assert result.exit_code == 2
    assert result.stderr == f"wmlp: error: {bad}: partiton: unknown key (did you mean 'partition'?)\n"
    wrong = write(tmp_path / "wrong.yaml", "runtime: kubernetes\n")
    assert "runtime: 'kubernetes' is not one of" in wmlp("sites", "check", str(wrong)).stderr
    env = write(tmp_path / "env.yaml", "env:\n  LD_LIBRARY_PATH: /opt/x\n")
    result = wmlp("slurm", "render", "--recipe", "cpu", "--site", str(env), *DATA)
    assert result.exit_code == 2 and result.stderr.startswith(f"wmlp: error: {env}: env.LD_LIBRARY_PATH: ")


def test_the_documented_examples_are_valid_and_render(tmp_path: Path) -> None:
    for name, recipe in (("nvidia-pyxis", "h100"), ("iluvatar-docker", "bi-v150")):
        assert wmlp("sites", "check", str(EXAMPLES / f"{name}.yaml")).exit_code == 0
        result = wmlp("slurm", "render", "--recipe", recipe, "--site", str(EXAMPLES / f"{name}.yaml"), *DATA,
                      "-o", str(tmp_path / f"{name}.sbatch"))
        assert result.exit_code == 0, result.output
    pyxis = (tmp_path / "nvidia-pyxis.sbatch").read_text()
    assert "#SBATCH --partition=gpu\n#SBATCH --account=ml-project\n#SBATCH --qos=normal\n" in pyxis
    assert "#SBATCH --reservation=ml-week\n" in pyxis
    assert "--container-image='registry.example.org#ml/wavemlp-kit:h100'" in pyxis
    # The data set lies under a site mount at its own path: no second mount for it.
    assert "mounts+=(/lustre/datasets:/lustre/datasets:ro " in pyxis and "imagenet:/lustre" not in pyxis
    docker = (tmp_path / "iluvatar-docker.sbatch").read_text()
    assert "#SBATCH --exclusive\n" in docker and "DOCKER_HOST" in docker
    assert "registry.example.org/ml/wavemlp-kit:bi-v150" in docker
    resolved = yaml.safe_load((tmp_path / "iluvatar-docker.recipe.yaml").read_text())
    assert resolved["env"]["NCCL_IB_GID_INDEX"] == "3" and resolved["env"]["NCCL_SOCKET_IFNAME"] == "eth0"
    assert resolved["env"]["GLOO_SOCKET_IFNAME"] == "eth0" and resolved["env"]["NCCL_ALGO"] == "Ring"


def test_flags_and_set_win_over_the_site_which_wins_over_nothing(tmp_path: Path, monkeypatch) -> None:
    site = write(tmp_path / "s.yaml", "partition: pa\nruntime: pyxis\nenv:\n  NCCL_ALGO: Tree\n")
    monkeypatch.setenv("WMLP_SITE", str(site))  # the default site
    result = wmlp("slurm", "render", "--recipe", "bi-v150", "--partition", "pb", "--runtime", "none", *DATA,
                  "--set", "env.NCCL_ALGO=Ring", "-o", str(tmp_path / "j.sbatch"))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "j.sbatch").read_text()
    assert "#SBATCH --partition=pb\n" in text and "container runtime none" in text
    assert yaml.safe_load((tmp_path / "j.recipe.yaml").read_text())["env"]["NCCL_ALGO"] == "Ring"
    plain = wmlp("slurm", "render", "--recipe", "bi-v150", *DATA, "-o", str(tmp_path / "k.sbatch"))
    assert plain.exit_code == 0 and "#SBATCH --partition=pa\n" in (tmp_path / "k.sbatch").read_text()
    assert yaml.safe_load((tmp_path / "k.recipe.yaml").read_text())["env"]["NCCL_ALGO"] == "Tree"


def test_the_resolved_recipe_is_what_runs_whatever_happens_to_the_recipe_later(tmp_path: Path) -> None:
    recipe = write(tmp_path / "mine.yaml", "extends: cpu\ntrain:\n  epochs: 7\n")
    result = wmlp("slurm", "render", "--recipe", str(recipe), *DATA, "--set", "train.batch_size=3",
                  "-o", str(tmp_path / "jobs" / "job.sbatch"))
    assert result.exit_code == 0, result.output
    resolved_path = tmp_path / "jobs" / "job.recipe.yaml"
    before = resolved_path.read_text()
    recipe.write_text("extends: cpu\ntrain:\n  epochs: 1\n")  # edited after rendering
    script = (tmp_path / "jobs" / "job.sbatch").read_text()
    assert f"train\n    --recipe {resolved_path}\n" in script and "--set" not in script.split("train_cmd=(")[1]
    resolved = yaml.safe_load(resolved_path.read_text())
    assert resolved_path.read_text() == before and "extends" not in resolved
    assert resolved["train"]["epochs"] == 7 and resolved["train"]["batch_size"] == 3
    # It loads back as the recipe it is, through the same validation.
    assert wmlp("recipes", "check", str(resolved_path)).exit_code == 0
