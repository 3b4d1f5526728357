"""What the kit knows about each device vendor, in one table: ``VENDORS``.

Device detection, ``wmlp doctor``, power sampling, rendered Slurm scripts, recipe checks and image
builds all read their vendor specifics (variables, tools, device files, Dockerfiles, base images,
collectives) from here, so supporting another vendor is one more ``Vendor`` entry.

Imports only the standard library: it runs on login nodes and build hosts without torch, and inside
vendor images on Python 3.8.
"""

import os
import shutil
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .errors import KitError


@dataclass(frozen=True)
class Vendor:
    """One vendor's specifics; an empty value means the vendor has no such thing."""

    name: str  # as recipes spell it in hardware.vendor
    label: str  # as people name the platform in messages
    device_type: str  # torch's device type: "cuda" (CoreX answers to torch.cuda too) or "cpu"
    visible_devices: str = ""  # limits the devices a process sees
    container_visible_devices: str = ""  # tells the vendor's container runtime which devices a container gets
    docker_runtime: str = ""  # `docker run --runtime=` of that container runtime
    # `docker run` arguments for the devices when no vendor runtime is installed, and why they look so.
    docker_without_runtime: Tuple[str, ...] = ()
    docker_without_runtime_why: str = ""
    apptainer_args: Tuple[str, ...] = ()  # `apptainer exec` arguments that bring the devices in
    device_files: Tuple[str, ...] = ()  # globs of a node's device files
    # Bound into containers one by one where no container hook knows the vendor (pyxis, apptainer).
    bind_device_files: bool = False
    device_files_why: str = ""
    sdk_root: str = ""  # where the vendor's SDK installs itself (tools under bin/)
    sdk_version_files: Tuple[str, ...] = ()  # under sdk_root, first line the version
    sdk_version_env: str = ""  # the SDK's version where neither torch nor the SDK folder names it
    sdk_env_prefixes: Tuple[str, ...] = ()  # variables that configure the SDK
    smi: str = ""  # the management tool
    smi_list: Tuple[str, ...] = ()  # its arguments that list the devices, one a line
    smi_power: Tuple[str, ...] = ()  # its arguments that print each device's draw in watts, one a line
    # Markers of the vendor's own torch build; a vendor without any runs stock CUDA torch.
    torch_tag: str = ""  # in torch.__version__, the SDK version after it: 2.4.1+corex.4.2.0
    torch_module: str = ""  # an attribute the build adds to the torch module
    device_name_hint: str = ""  # in the lowercased device names torch reports
    dockerfile: str = "cuda"  # docker/Dockerfile.<dockerfile>
    base_image: str = ""  # the base image when a recipe names none
    base_missing_hint: str = ""  # what to do when the base is not in the engine ({base} is filled in)
    # The build arg of the Dockerfile that labels the image with the base's SDK version, and the key of
    # that version in what wavemlp/image/provision.py's probe reports.
    sdk_build_arg: str = ""
    sdk_probe_key: str = ""
    collective_backend: str = "gloo"  # torch.distributed's name for it
    collective_library: str = ""  # what actually runs the collectives
    collective_env_prefix: str = ""  # variables the collective library reads

    @property
    def dockerfile_path(self) -> str:
        """Relative to the kit's checkout (the build context)."""
        return "docker/Dockerfile." + self.dockerfile

    @property
    def env_prefixes(self) -> Tuple[str, ...]:
        """Prefixes of the variables that shape what a process sees of this vendor's devices and collectives
        (the container runtime's variable acts before the process starts: not among them)."""
        names = (self.visible_devices, self.collective_env_prefix)
        return tuple(n for n in names if n) + self.sdk_env_prefixes

    def locate_smi(self) -> Optional[str]:
        """The management tool on PATH, else in the SDK's bin folder (a shell without the SDK's profile
        lacks it on PATH)."""
        if not self.smi:
            return None
        found = shutil.which(self.smi)
        if found:
            return found
        fallback = os.path.join(self.sdk_root, "bin", self.smi) if self.sdk_root else ""
        return fallback if fallback and os.path.exists(fallback) else None


_NGC_PYTORCH = "nvcr.io/nvidia/pytorch:24.05-py3"

VENDORS = {
    "nvidia": Vendor(
        name="nvidia",
        label="NVIDIA CUDA",
        device_type="cuda",
        visible_devices="CUDA_VISIBLE_DEVICES",
        container_visible_devices="NVIDIA_VISIBLE_DEVICES",
        docker_runtime="nvidia",
        docker_without_runtime=("--gpus=all",),
        # pyxis' enroot hook and apptainer --nv bring the device files themselves.
        apptainer_args=("--nv",),
        device_files=("/dev/nvidia*",),
        smi="nvidia-smi",
        smi_list=("-L",),
        smi_power=("--query-gpu=power.draw", "--format=csv,noheader,nounits"),
        dockerfile="cuda",
        base_image=_NGC_PYTORCH,
        base_missing_hint="`docker pull {base}` first (builds never pull), or build/tag your site's CUDA PyTorch "
        "image as {base}",
        sdk_build_arg="CUDA_RUNTIME",
        sdk_probe_key="cuda",
        collective_backend="nccl",
        collective_library="NCCL",
        collective_env_prefix="NCCL_",
    ),
    "iluvatar": Vendor(
        name="iluvatar",
        label="CoreX",
        device_type="cuda",
        # The SDK's torch takes CUDA's variable; its container runtime has one of its own.
        visible_devices="CUDA_VISIBLE_DEVICES",
        container_visible_devices="IX_VISIBLE_DEVICES",
        docker_runtime="iluvatar",
        # The device files come in one by one (device_files), the visible-devices variable keeps the granted ones.
        docker_without_runtime_why="No iluvatar runtime: this node's CoreX device files go in one by one, and "
        "CUDA_VISIBLE_DEVICES keeps the ones Slurm granted.",
        device_files=("/dev/iluvatar*", "/dev/itrctl"),
        bind_device_files=True,
        device_files_why="CoreX devices (and the control device of newer drivers), as this node shows them.",
        sdk_root="/usr/local/corex",
        sdk_version_files=("VERSION", "version.txt"),
        sdk_version_env="COREX_VERSION",
        sdk_env_prefixes=("IX_", "COREX"),
        smi="ixsmi",
        smi_list=("-L",),
        # ixsmi takes nvidia-smi's query syntax.
        smi_power=("--query-gpu=power.draw", "--format=csv,noheader,nounits"),
        torch_tag="corex",
        torch_module="corex",
        device_name_hint="iluvatar",
        dockerfile="corex",
        # No public CoreX image: each site builds its SDK image and names it so.
        base_image="corex:4.2.0",
        base_missing_hint="CoreX SDK images are built by each site from Iluvatar's installer: build yours and "
        "`docker tag` it as {base}, or pass another base",
        sdk_build_arg="COREX_SDK",
        sdk_probe_key="corex_sdk",
        # IXCCL answers to torch's nccl backend and reads NCCL_ variables.
        collective_backend="nccl",
        collective_library="IXCCL",
        collective_env_prefix="NCCL_",
    ),
    "cpu": Vendor(
        name="cpu",
        label="CPU",
        device_type="cpu",
        # The CUDA torch runs on CPUs as well.
        dockerfile="cuda",
        base_image=_NGC_PYTORCH,
        collective_backend="gloo",
        collective_library="gloo",
    ),
}

# The vendor of CUDA devices that carry no vendor's markers, and of recipes that name no vendor.
CUDA_DEFAULT = "nvidia"


def vendor(name: str) -> Vendor:
    try:
        return VENDORS[name]
    except KeyError:
        raise KitError("unknown vendor {!r}; vendors: {}".format(name, ", ".join(VENDORS))) from None


def recipe_vendor(hardware_vendor: str, device: str) -> Vendor:
    """The vendor a recipe is for: its ``hardware.vendor``, else by ``hardware.device``."""
    if hardware_vendor:
        return vendor(hardware_vendor)
    return VENDORS["cpu"] if device == "cpu" else VENDORS[CUDA_DEFAULT]


def dockerfiles() -> List[str]:
    """The Dockerfile kinds (``docker/Dockerfile.<kind>``), in table order."""
    kinds: List[str] = []
    for v in VENDORS.values():
        if v.dockerfile not in kinds:
            kinds.append(v.dockerfile)
    return kinds


def dockerfile_vendor(kind: str) -> Vendor:
    """The first vendor whose images build from Dockerfile ``kind``: its base and hints are that Dockerfile's."""
    for v in VENDORS.values():
        if v.dockerfile == kind:
            return v
    raise KitError("unknown Dockerfile {!r} (known: {})".format(kind, ", ".join(dockerfiles())))


def identify(torch_module, device_names: Sequence[str] = ()) -> Optional[Vendor]:
    """The vendor whose own torch build this is (by its markers), or whose names the devices carry.

    ``torch_module`` is the imported torch, taken as an argument so that this module never imports it.
    None: stock torch with devices that name no vendor.
    """
    version = str(getattr(torch_module, "__version__", ""))
    names = [n.lower() for n in device_names]
    for v in VENDORS.values():
        if (
            (v.torch_tag and v.torch_tag in version)
            or (v.torch_module and hasattr(torch_module, v.torch_module))
            or (v.device_name_hint and any(v.device_name_hint in n for n in names))
        ):
            return v
    return None


def smi_vendor(path: str) -> Optional[Vendor]:
    """The vendor whose management tool ``path`` is, by its file name."""
    tool = os.path.basename(path)
    return next((v for v in VENDORS.values() if v.smi and v.smi == tool), None)
