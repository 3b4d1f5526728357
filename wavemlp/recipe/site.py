"""Site files: what belongs to a cluster rather than a model (partition, account, container runtime,
image registry, mounts, network, extra sbatch options, env), read and validated like recipes.

``--site NAME|FILE`` finds a file by path, else ``NAME.yaml`` in each folder of ``$WMLP_SITES``
(colon-separated), then in ``~/.config/wmlp/sites/``. ``$WMLP_SITE`` names the default site.

Login-node side: yaml and the standard library only. Python 3.8 syntax.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

from .loader import SUFFIXES, RecipeError, _build, _read_yaml
from .schema import setting

RUNTIMES = ("none", "pyxis", "apptainer", "docker")
# What sbatch hands on from the submitting shell (with --export=NAME,...; SLURM_* always pass): enough
# for a shell and Python, not the login node's module paths, proxies or virtual environment.
DEFAULT_EXPORT = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "WMLP_PYTHON"]


@dataclass
class NetworkCfg:
    socket_ifname: str = setting("", "interface for bootstrap and TCP traffic (NCCL_/GLOO_SOCKET_IFNAME)", "")
    ib_hca: str = setting("", "InfiniBand adapters the collectives use, e.g. mlx5_0,mlx5_1 (NCCL_IB_HCA)", "")
    ib_gid_index: Optional[int] = setting(None, "RoCE GID index (NCCL_IB_GID_INDEX)", "", range=(0, 255))
    ib_disable: bool = setting(False, "no InfiniBand: collectives over TCP (NCCL_IB_DISABLE=1)", "")


@dataclass
class SiteCfg:
    description: str = setting("", "what this site is", "")
    partition: str = setting("", "Slurm partition ('' = the cluster's default)", "")
    account: str = setting("", "Slurm account", "")
    qos: str = setting("", "Slurm QOS", "")
    constraint: str = setting("", "node features, e.g. a100|h100", "")
    gpu_request: str = setting(
        "", "how GPUs are asked for here ('' = the recipe's cluster.gpu_request)", "",
        choices=["", "gres", "gpus-per-node", "none"],
    )
    exclusive: bool = setting(False, "ask for whole nodes (#SBATCH --exclusive)", "")
    mem: str = setting("", "memory per node ('' = the recipe's cluster.mem)", "")
    runtime: str = setting("none", "container runtime on the nodes", "", choices=list(RUNTIMES))
    image_prefix: str = setting(
        "", "put before image names: 'registry.site/ml/' (docker), 'registry.site#ml/' (pyxis), "
        "'/shared/images/' (apptainer .sif files)", "",
    )
    mounts: List[str] = setting(None, "host paths every container sees: SRC[:DST[:OPTS]]", "", factory=list)
    network: NetworkCfg = field(default_factory=NetworkCfg)
    sbatch_args: List[str] = setting(None, "extra sbatch options, e.g. --reservation=x", "", factory=list)
    export: List[str] = setting(
        None, "variables sbatch takes from the submitting shell (SLURM_* always)", "",
        factory=lambda: list(DEFAULT_EXPORT),
    )
    env: Dict[str, str] = field(default_factory=dict, metadata={"help": "environment of every process", "flag": ""})

    def env_overlay(self) -> Dict[str, str]:
        """The site's variables for every process: its network settings, then its own ``env``."""
        n = self.network
        out = {}
        if n.socket_ifname:
            out.update(NCCL_SOCKET_IFNAME=n.socket_ifname, GLOO_SOCKET_IFNAME=n.socket_ifname)
        if n.ib_hca:
            out["NCCL_IB_HCA"] = n.ib_hca
        if n.ib_gid_index is not None:
            out["NCCL_IB_GID_INDEX"] = str(n.ib_gid_index)
        if n.ib_disable:
            out["NCCL_IB_DISABLE"] = "1"
        out.update(self.env)
        return out


class LoadedSite(NamedTuple):
    site: SiteCfg
    name: str  # "" for no site
    path: Optional[Path]


NO_SITE = LoadedSite(SiteCfg(), "", None)


def site_dirs() -> List[Path]:
    dirs = [Path(d).expanduser() for d in os.environ.get("WMLP_SITES", "").split(os.pathsep) if d]
    return dirs + [Path("~/.config/wmlp/sites").expanduser()]


def available_sites() -> Dict[str, Path]:
    """Site files by name; a name found in an earlier folder hides the later ones."""
    found: Dict[str, Path] = {}
    for folder in site_dirs():
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.suffix in SUFFIXES and path.is_file():
                    found.setdefault(path.stem, path)
    return found


def find_site(ref: str) -> Path:
    path = Path(ref).expanduser()
    if path.is_file():
        return path.resolve()
    sites = available_sites()
    if ref in sites:
        return sites[ref].resolve()
    where = ", ".join(str(d) for d in site_dirs())
    known = ", ".join(sites) or "none"
    raise RecipeError("--site: '{}' is not a file nor a site in {} (sites: {})".format(ref, where, known))


def load_site(ref: Optional[str]) -> LoadedSite:
    """``ref`` (a path or a name), else ``$WMLP_SITE``, else no site: the defaults above."""
    ref = ref or os.environ.get("WMLP_SITE", "")
    if not ref:
        return NO_SITE
    path = find_site(ref)
    data = _read_yaml(path, empty_ok=True)
    try:
        site = _build(SiteCfg, data, "")
    except RecipeError as exc:
        raise RecipeError("{}: {}".format(path, exc)) from None
    return LoadedSite(site, path.stem, path)
