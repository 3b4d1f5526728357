"""The package's import rules (wavemlp/__init__.py lists them), checked on the source and on the installed
`wmlp` where torch cannot be imported, as on a login node."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "wavemlp"
HEAVY = ("torch", "torchvision", "timm")
LOGIN_SIDE = ("wavemlp.recipe", "wavemlp.render", "wavemlp.image", "wavemlp.vendors", "wavemlp.resources",
              "wavemlp.errors", "wavemlp.cli")
JOB_SIDE = ("wavemlp.render", "wavemlp.image", "wavemlp.cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module imported, at module level?) for every import statement of a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found += [(target, id(node) in top_level)]
            if node.module is None or node.level:  # `from . import x`: x may be a module
                found += [(target + "." + alias.name, id(node) in top_level) for alias in node.names]
    return found


def sources() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "_kit" not in p.parts)


def under(name: str, prefixes) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations(rule) -> list[str]:
    out = []
    for path in sources():
        for target, top in imports(path):
            if rule(module_name(path), target, top):
                out.append("{} imports {}".format(path.relative_to(ROOT), target))
    return out


def test_the_import_reader_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    found = imports(PKG / "cli" / "measure.py")
    assert ("wavemlp.cli.core", True) in found
    assert ("wavemlp.profiling", False) in found and ("torch", False) in found


def test_models_know_nothing_of_training_or_jobs() -> None:
    forbidden = ("wavemlp.engine", "wavemlp.data", "wavemlp.recipe", "wavemlp.bench", "wavemlp.report",
                 "wavemlp.profiling") + JOB_SIDE
    assert violations(lambda mod, target, top: under(mod, ["wavemlp.models"]) and under(target, forbidden)) == []


def test_data_does_not_reach_into_engine_or_jobs() -> None:
    forbidden = ("wavemlp.engine", "wavemlp.bench", "wavemlp.report") + JOB_SIDE
    assert violations(lambda mod, target, top: under(mod, ["wavemlp.data"]) and under(target, forbidden)) == []


def test_login_node_side_never_imports_torch() -> None:
    # The CLI may load torch inside a command body; everything else on this side never does.
    def rule(mod, target, top):
        if not under(mod, LOGIN_SIDE) or not under(target, HEAVY):
            return False
        return top or not under(mod, ["wavemlp.cli"])

    assert violations(rule) == []


def test_login_node_side_imports_no_heavy_part_of_the_kit_at_import() -> None:
    heavy_kit = ("wavemlp.models", "wavemlp.data", "wavemlp.engine", "wavemlp.bench", "wavemlp.report",
                 "wavemlp.profiling")
    assert violations(lambda mod, target, top: under(mod, LOGIN_SIDE) and top and under(target, heavy_kit)) == []


def test_only_the_cli_imports_click() -> None:
    assert violations(lambda mod, target, top: under(target, ["click"]) and not under(mod, ["wavemlp.cli"])) == []


# ----------------------------------------------------------------------------- a login node, for real

_BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision", "timm"):
            raise ModuleNotFoundError("No module named {!r} (no torch on this login node)".format(name), name=name)
sys.meta_path.insert(0, _NoTorch())
"""


@pytest.fixture(scope="module")
def login_env(tmp_path_factory) -> dict:
    """An environment whose Python cannot import torch, timm or torchvision (a sitecustomize blocks them)."""
    folder = tmp_path_factory.mktemp("no-torch")
    (folder / "sitecustomize.py").write_text(_BLOCK_TORCH)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(folder), os.environ.get("PYTHONPATH")])))
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "no torch on this login node" in check.stderr
    return env


LOGIN_COMMANDS = [
    ["--help"],
    ["recipes", "list"],
    ["recipes", "show", "bi-v150", "--resolved"],
    ["recipes", "check", "a100"],
    ["slurm", "render", "--recipe", "bi-v150", "--set", "data.path=/data/imagenet"],
    ["launch", "--recipe", "cpu", "--gpus", "2", "--dry-run"],
    ["image", "build", "--gpu", "bi-v150", "--print"],
]


@pytest.mark.parametrize("args", LOGIN_COMMANDS, ids=" ".join)
def test_installed_wmlp_runs_the_login_node_commands_without_torch(args, wmlp_exe, login_env, tmp_path) -> None:
    out = subprocess.run([wmlp_exe, *args], env=login_env, capture_output=True, text=True, cwd=tmp_path,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() and "Traceback" not in out.stderr


def test_a_torch_command_without_torch_is_one_line_not_a_traceback(wmlp_exe, login_env, tmp_path) -> None:
    out = subprocess.run([wmlp_exe, "profile", "--model", "WaveMLP_T_dw"], env=login_env, capture_output=True,
                         text=True, cwd=tmp_path, timeout=60)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr and out.stderr.startswith("wmlp: error: ")
    assert "torch" in out.stderr
