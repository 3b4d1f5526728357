"""The vendor table: one place for vendor specifics, and the consumers really read it.

No devices needed: table entries are swapped for made-up vendors' values, and fake management tools
stand in for nvidia-smi and ixsmi.
"""

from __future__ import annotations

import ast
import dataclasses
import stat
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from wavemlp import vendors
from wavemlp.errors import KitError
from wavemlp.recipe import load_recipe
from wavemlp.recipe.schema import HardwareCfg, ImageCfg
from wavemlp.vendors import VENDORS, identify, vendor

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "wavemlp" / "vendors.py"


def _rendered(*args: str) -> str:
    from tests.infra.render_tools import wmlp

    result = wmlp("slurm", "render", *args, "--set", "data.path=/datasets/imagenet")
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Rendering to standard output writes the resolved recipe into the current folder: not the checkout."""
    monkeypatch.chdir(tmp_path)


def _fake_tool(folder: Path, name: str, args: tuple[str, ...], output: str) -> Path:
    """An executable that prints ``output`` when called with exactly ``args``, else a line that is no answer."""
    folder.mkdir(parents=True, exist_ok=True)
    tool = folder / name
    answer = f'if [ "$*" = "{" ".join(args)}" ]; then printf "{output}"; else echo "unexpected: $*"; fi'
    tool.write_text(f"#!/bin/sh\n{answer}\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    return tool


# ---------------------------------------------------------------------------------------------- table


def test_lookup_by_name_and_unknown_names_in_one_line():
    assert list(VENDORS) == ["nvidia", "iluvatar", "cpu"]
    for name, entry in VENDORS.items():
        assert vendor(name) is entry and entry.name == name
    with pytest.raises(KitError) as err:
        vendor("amd")
    assert str(err.value) == "unknown vendor 'amd'; vendors: nvidia, iluvatar, cpu"


def test_entries_hold_what_the_consumers_need():
    nv, ix, cpu = VENDORS["nvidia"], VENDORS["iluvatar"], VENDORS["cpu"]
    assert nv.visible_devices == ix.visible_devices == "CUDA_VISIBLE_DEVICES"  # CoreX's torch takes CUDA's
    assert (nv.container_visible_devices, ix.container_visible_devices) == ("NVIDIA_VISIBLE_DEVICES",
                                                                            "IX_VISIBLE_DEVICES")
    assert (nv.smi, ix.smi, cpu.smi) == ("nvidia-smi", "ixsmi", "")
    assert (nv.collective_backend, ix.collective_backend, cpu.collective_backend) == ("nccl", "nccl", "gloo")
    assert (nv.collective_library, ix.collective_library) == ("NCCL", "IXCCL")
    assert cpu.device_type == "cpu" and not cpu.container_visible_devices and not cpu.docker_runtime
    for entry in VENDORS.values():
        assert (ROOT / entry.dockerfile_path).is_file(), entry.dockerfile_path
        assert entry.base_image
    assert vendors.dockerfiles() == ["cuda", "corex"]
    assert vendors.dockerfile_vendor("cuda") is nv  # the CPU images share NVIDIA's Dockerfile and base
    with pytest.raises(KitError, match=r"unknown Dockerfile 'rocm' \(known: cuda, corex\)"):
        vendors.dockerfile_vendor("rocm")


def test_recipes_take_their_vendor_names_and_dockerfiles_from_the_table():
    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(HardwareCfg)}
    assert choices["vendor"] == ["", *VENDORS]
    choices = {f.name: f.metadata["choices"] for f in dataclasses.fields(ImageCfg)}
    assert choices["dockerfile"] == ["", *vendors.dockerfiles()]
    assert vendors.recipe_vendor("", "cpu") is VENDORS["cpu"]
    assert vendors.recipe_vendor("", "auto") is VENDORS[vendors.CUDA_DEFAULT]
    assert vendors.recipe_vendor("iluvatar", "cuda") is VENDORS["iluvatar"]


def test_table_imports_only_the_standard_library():
    tree = ast.parse(TABLE.read_text())
    relative, absolute = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            (relative if node.level else absolute).add((node.module or "").split(".")[0])
    assert absolute <= set(sys.stdlib_module_names), absolute - set(sys.stdlib_module_names)
    assert relative == {"errors"}  # the kit's error class, itself free of imports
    errors = ast.parse((ROOT / "wavemlp" / "errors.py").read_text())
    assert not [n for n in ast.walk(errors) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _specifics() -> set[str]:
    """Strings only the table may hold: the vendors' tools, variables, device files, SDK folders, images."""
    found = {"ixsmi", "IX_VISIBLE_DEVICES"}
    for v in VENDORS.values():
        found |= {v.smi, v.container_visible_devices, v.sdk_root, v.base_image, v.dockerfile_path, *v.device_files}
    return {s for s in found if s}


def test_no_other_module_or_template_spells_vendor_specifics():
    needles = _specifics()
    assert {"nvidia-smi", "/dev/iluvatar*", "docker/Dockerfile.corex", "/usr/local/corex"} <= needles
    sources = [p for p in (ROOT / "wavemlp").rglob("*.py") if p != TABLE]
    sources += sorted((ROOT / "slurm").glob("*.j2")) + sorted((ROOT / "launch").glob("*.j2"))
    offenders = {}
    for path in sources:
        text = path.read_text()
        hits = sorted(n for n in needles if n in text)
        if hits:
            offenders[str(path.relative_to(ROOT))] = hits
    assert not offenders, f"vendor specifics outside wavemlp/vendors.py: {offenders}"


# ------------------------------------------------------------------------------ consumers read it


@pytest.fixture
def made_up(monkeypatch):
    """The iluvatar entry with every field a consumer reads swapped for recognisable values."""
    entry = dataclasses.replace(
        VENDORS["iluvatar"],
        container_visible_devices="ZZ_VISIBLE_DEVICES",
        docker_without_runtime=("--device=/dev/zz0",),
        docker_without_runtime_why="No zz runtime: one device file by hand.",
        apptainer_args=("--zz",),
        device_files=("/dev/zz*", "/dev/zzctl"),
        device_files_why="ZZ devices, as this node shows them.",
        base_image="site/zz-sdk:9.9",
        sdk_build_arg="ZZ_SDK",
    )
    monkeypatch.setitem(VENDORS, "iluvatar", entry)
    return entry


def test_rendered_sbatch_takes_devices_and_variables_from_the_table(made_up):
    docker = _rendered("--recipe", "bi-v150", "--runtime", "docker")
    assert '--runtime=iluvatar --env=ZZ_VISIBLE_DEVICES="$granted"' in docker and "IX_VISIBLE_DEVICES" not in docker
    bare = _rendered("--recipe", "bi-v150", "--runtime", "docker", "--set", "image.runtime=")
    by_hand = "# No zz runtime: one device file by hand.\nargs+=(--device=/dev/zz0)\nfor dev in /dev/zz* /dev/zzctl"
    assert by_hand in bare
    assert '--env=CUDA_VISIBLE_DEVICES="$granted"' in bare and "--privileged" not in bare
    apptainer = _rendered("--recipe", "bi-v150", "--runtime", "apptainer")
    assert "# ZZ devices, as this node shows them.\nfor dev in /dev/zz* /dev/zzctl; do\n" in apptainer
    assert 'exec --cleanenv --zz --pwd "$work_dir"' in apptainer and "/dev/iluvatar" not in apptainer
    # Bare metal mounts nothing; NVIDIA's runtimes bring their device files themselves.
    assert "/dev/zz" not in _rendered("--recipe", "bi-v150", "--runtime", "none")
    assert "for dev in" not in _rendered("--recipe", "a100", "--runtime", "pyxis")


def test_image_build_takes_dockerfile_base_and_labels_from_the_table(made_up, monkeypatch):
    from wavemlp.image import build, targets

    # A recipe that leaves Dockerfile and base to its vendor.
    bare = load_recipe("bi-v150", ["image.base=", "image.dockerfile="])
    assert targets.image_settings(bare.recipe) == ("corex", "site/zz-sdk:9.9")
    monkeypatch.setattr(build, "check_target", lambda name: bare)
    cmd = build.docker_build_command("bi-v150", context=ROOT)
    assert cmd[cmd.index("-f") + 1] == str(ROOT / made_up.dockerfile_path)
    assert "BASE_IMAGE=site/zz-sdk:9.9" in cmd
    info = build.BaseInfo("3.10.12", "2.4.1+corex.9.9", "/x/torch/__init__.py", None, None, "9.9")
    assert build.base_build_args(info, "corex") == {"TORCH_VERSION": "2.4.1+corex.9.9", "ZZ_SDK": "9.9"}
    # A Dockerfile chosen against the vendor's own: that Dockerfile's base.
    assert targets.image_settings(bare.recipe, dockerfile="cuda") == ("cuda", VENDORS["nvidia"].base_image)


def test_torch_builds_and_device_names_identify_the_vendor():
    assert identify(SimpleNamespace(__version__="2.4.1+corex.4.2.0")) is VENDORS["iluvatar"]
    assert identify(SimpleNamespace(__version__="2.1.0", corex=object())) is VENDORS["iluvatar"]
    assert identify(SimpleNamespace(__version__="2.4.0"), ["Iluvatar BI-V150"]) is VENDORS["iluvatar"]
    assert identify(SimpleNamespace(__version__="2.4.0a0+nv24.5"), ["NVIDIA A100-SXM4-80GB"]) is None


def test_devices_take_the_sdk_version_from_the_torch_build(monkeypatch):
    from wavemlp.engine import devices

    monkeypatch.setattr(devices.torch, "__version__", "2.4.1+corex.4.2.0")
    assert devices.torch_build() is VENDORS["iluvatar"]
    assert devices.sdk_version(VENDORS["iluvatar"]) == "4.2.0"
    monkeypatch.setattr(devices.torch, "__version__", "2.1.0")
    monkeypatch.setitem(VENDORS, "iluvatar", dataclasses.replace(VENDORS["iluvatar"], sdk_root="/nonexistent"))
    monkeypatch.setenv("COREX_VERSION", "3.1.0")  # neither in the build string nor in the (absent) SDK folder
    assert devices.sdk_version(VENDORS["iluvatar"]) == "3.1.0"


def test_doctor_asks_each_vendors_tool_and_names_its_files_and_variables(made_up, monkeypatch, tmp_path):
    from wavemlp.engine import doctor

    # The SDK's bin folder, off PATH: where vendor images leave their tool.
    _fake_tool(tmp_path / "sdk" / "bin", "zzsmi", ("--list",), "GPU 0: ZZ-1\\nGPU 1: ZZ-1\\n")
    entry = dataclasses.replace(made_up, smi="zzsmi", smi_list=("--list",), sdk_root=str(tmp_path / "sdk"))
    monkeypatch.setitem(VENDORS, "iluvatar", entry)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    found = doctor._smi(entry)
    assert found["path"] == str(tmp_path / "sdk" / "bin" / "zzsmi")
    assert found["devices"] == ["GPU 0: ZZ-1", "GPU 1: ZZ-1"]
    assert doctor._smi(VENDORS["nvidia"]) is None

    report = {"python": "3.10", "torch": "2.1.0+corex.9.9", "timm": "1", "jpeg_decoder": "x", "torch_path": "/t",
              "device_count": 0, "torch_build": "iluvatar", "corex": True, "smi": {}, "env": {}}
    lines = doctor.format_report(report)
    assert lines[2] == ("no CUDA/CoreX device visible to torch: training will run on the CPU (this torch is a "
                        "CoreX build: check /dev/zz*, /dev/zzctl and ZZ_VISIBLE_DEVICES)")
    report.update(device_count=2, vendor="iluvatar", devices=["ZZ-1", "ZZ-1"], sdk="9.9", nccl="2.18.3")
    assert "SDK 9.9  IXCCL 2.18.3" in doctor.format_report(report)
    assert {"CUDA_VISIBLE_DEVICES", "NCCL_", "IX_", "COREX", "LD_LIBRARY_PATH"} <= set(doctor.ENV_PREFIXES)


def test_power_sampling_finds_and_queries_the_vendors_tool(monkeypatch, tmp_path):
    from wavemlp.bench import power

    entry = dataclasses.replace(VENDORS["iluvatar"], smi_power=("--zz-power", "--csv"))
    monkeypatch.setitem(VENDORS, "iluvatar", entry)
    tool = _fake_tool(tmp_path / "bin", entry.smi, entry.smi_power, "250.5\\n 61.25 W\\n[N/A]\\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert power.find_smi() == str(tool)
    assert power.read_power_watts(str(tool)) == [250.5, 61.25]
    # A tool of another name (a site's wrapper) is asked in the default vendor's syntax.
    wrapper = _fake_tool(tmp_path / "bin", "site-smi", VENDORS[vendors.CUDA_DEFAULT].smi_power, "300\\n")
    assert power.read_power_watts(str(wrapper)) == [300.0]


def test_auto_collectives_follow_the_devices_vendor(monkeypatch):
    import torch

    from wavemlp.engine import distributed
    from wavemlp.engine.devices import DeviceInfo

    calls = []
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda backend, **kw: calls.append(backend))
    info = distributed.DistInfo(rank=0, world_size=2, local_rank=0, launcher="torchrun")
    distributed.init(info, "auto", torch.device("cpu"))
    monkeypatch.setitem(VENDORS, "iluvatar", dataclasses.replace(VENDORS["iluvatar"], collective_backend="zzccl"))
    monkeypatch.setattr(distributed, "detect", lambda: DeviceInfo(type="cuda", vendor="iluvatar", count=2))
    distributed.init(info, "auto", torch.device("cuda", 0))
    assert calls == [VENDORS["cpu"].collective_backend, "zzccl"]
