"""``wmlp slurm render|submit``: a batch script from ``slurm/job.sbatch.j2``, and its submission.

Runs on login nodes and inside images: Python 3.8 syntax, no torch.
"""

import os
import re
import shutil
import subprocess
from typing import List, NamedTuple, Optional, Sequence

from ..resources import PRETRAINED_DIR_ENV
from ..vendors import vendor
from .quoting import RenderError, job_name, quote, sbatch_value, signal_name
from .target import POSIX_NAME, Target, check_mounts
from .templates import render

TEMPLATE = "job.sbatch.j2"
RUNTIMES = ("none", "pyxis", "apptainer", "docker")



class SlurmOptions(NamedTuple):
    """Flags of ``wmlp slurm render``; None means: the site's value, else the recipe's."""

    nodes: int = 1
    gpus_per_node: Optional[int] = None
    time: Optional[str] = None
    partition: Optional[str] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    container_image: Optional[str] = None
    container_mounts: Sequence[str] = ()
    runtime: Optional[str] = None
    run_dir: Optional[str] = None
    recipe_path: str = ""  # the resolved recipe the job trains from (absolute)
    exclusive: bool = False
    mem: Optional[str] = None
    sbatch_args: Sequence[str] = ()


# Options the script sets itself from the recipe, the site or a flag of its own: passed through, they
# would contradict it.
_OWNED_SBATCH = {
    "job-name": "the recipe's name", "nodes": "--nodes", "ntasks": "one task per node",
    "ntasks-per-node": "one task per node", "gres": "--gpus", "gpus-per-node": "--gpus", "gpus": "--gpus",
    "cpus-per-task": "cluster.cpus_per_task", "mem": "--mem", "time": "--time", "signal": "cluster.signal",
    "requeue": "cluster.requeue", "no-requeue": "cluster.requeue", "open-mode": "the script",
    "output": "the script", "error": "the script", "export": "the site's export list",
    "partition": "--partition", "account": "--account", "qos": "--qos", "constraint": "--constraint",
    "exclusive": "--exclusive", "wrap": "the script",
}


def check_sbatch_arg(text: str, source: str) -> str:
    """``--name`` or ``--name=value`` that sbatch reads from an ``#SBATCH`` line as one option."""
    match = re.fullmatch(r"--([a-z][a-z0-9-]*)(?:=([A-Za-z0-9_.,:+=@/%*\[\]-]+))?", text)
    if not match:
        raise RenderError(
            "{}: {} is not an sbatch option of the form --name or --name=value (letters, digits, "
            "_ . , : + = @ / % * [ ] -)".format(source, quote(text))
        )
    name = match.group(1)
    if name in _OWNED_SBATCH:
        raise RenderError("{}: {} is set by the script (use {})".format(source, quote(text), _OWNED_SBATCH[name]))
    return text


def time_seconds(text: str) -> Optional[int]:
    """A Slurm time limit in seconds (None for UNLIMITED): MM, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]."""
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(x) for x in rest.split(":")]
    if days:
        parts += [0] * (3 - len(parts))
        h, m, sec = parts
    elif len(parts) == 3:
        h, m, sec = parts
    else:
        h, (m, sec) = 0, (parts + [0])[:2]
    return ((int(days or 0) * 24 + h) * 60 + m) * 60 + sec


def _pick(flag_value, recipe_value, flag: str, key: str):
    """(value, where it came from): errors name the flag when the user typed it, else the recipe key."""
    if flag_value is not None:
        return flag_value, flag
    return recipe_value, key


def default_image(target: Target, runtime: str) -> str:
    """The recipe's image as each runtime names it, after the site's ``image_prefix``: apptainer runs a
    SIF file (``apptainer build wavemlp-kit_<tag>.sif docker-daemon://wavemlp-kit:<tag>``), the others
    an image name."""
    i = target.recipe.image
    if not i.name:
        return ""
    prefix = target.site.site.image_prefix
    if runtime == "apptainer":
        return prefix + "{}.sif".format("_".join(p for p in (i.name, i.tag) if p))
    return prefix + target.image_ref()


def _mountable(path: str, source: str) -> str:
    if re.search(r"[,:\x00-\x1f\x7f]", path):
        raise RenderError(
            "{}: {} holds ',' ':' or a control character, which a container mount cannot carry".format(
                source, quote(path))
        )
    return path


def job_mounts(target: Target, recipe_path: str) -> List[str]:
    """A read-only mount for every host path a training job reads, each at its own path, so the resolved
    recipe needs no rewriting inside the container (the run and submit folders are added at run time)."""
    r = target.recipe
    paths = [("data.path", r.data.path), ("the resolved recipe", recipe_path)]
    if r.model.initial_checkpoint:
        paths.append(("model.initial_checkpoint", os.path.abspath(r.model.initial_checkpoint)))
    if r.env.get(PRETRAINED_DIR_ENV):
        paths.append(("env." + PRETRAINED_DIR_ENV, r.env[PRETRAINED_DIR_ENV]))
    return ["{0}:{0}:ro".format(_mountable(path, source)) for source, path in paths]


def sbatch_context(target: Target, opts: SlurmOptions) -> dict:
    r = target.recipe
    c = r.cluster
    site = target.site.site
    site_src = str(target.site.path) if target.site.path else "site"
    if opts.nodes < 1:
        raise RenderError("--nodes: {} is not a node count (1 or more)".format(opts.nodes))
    gpus = r.hardware.devices_per_node if opts.gpus_per_node is None else opts.gpus_per_node
    if gpus < 1:
        raise RenderError("--gpus: {} is not a count (1 or more)".format(gpus))
    runtime, where = _pick(opts.runtime, site.runtime, "--runtime", site_src + ": runtime")
    if runtime not in RUNTIMES:
        raise RenderError("{}: {!r} is not one of {}".format(where, runtime, ", ".join(RUNTIMES)))
    if not r.data.path:
        raise RenderError(
            "data.path: a training job needs its data set: --set data.path=/path/to/imagenet "
            "(the folder with train/ and val/, as the nodes see it)"
        )
    if not opts.recipe_path or not os.path.isabs(opts.recipe_path):
        raise RenderError("the resolved recipe's path must be absolute, got {!r}".format(opts.recipe_path))

    time, where = _pick(opts.time, c.time, "--time", "cluster.time")
    time = sbatch_value(time, "time", where)
    limit = time_seconds(time)
    if limit is not None and c.signal_grace >= limit:
        raise RenderError(
            "cluster.signal_grace: {} s is not shorter than the time limit {} ({} s): the job would be "
            "signalled at its start, checkpoint and requeue forever".format(c.signal_grace, time, limit)
        )
    placement = []
    for option, flag_value, site_value, rule in (
        ("partition", opts.partition, site.partition, "name"),
        ("account", opts.account, site.account, "name"),
        ("qos", opts.qos, site.qos, "name"),
        ("constraint", opts.constraint, site.constraint, "constraint"),
    ):
        value, source = _pick(flag_value, site_value, "--" + option, "{}: {}".format(site_src, option))
        if value:
            placement.append((option, sbatch_value(value, rule, source)))
    mem, where = _pick(opts.mem, c.mem, "--mem", "cluster.mem")
    extra = [check_sbatch_arg(a, "{}: sbatch_args".format(site_src)) for a in site.sbatch_args]
    extra += [check_sbatch_arg(a, "--sbatch-arg") for a in opts.sbatch_args]
    export = []
    for name in site.export:
        if not POSIX_NAME.fullmatch(name):
            raise RenderError("{}: export: {} is not a variable name".format(site_src, quote(name)))
        export.append(name)

    if runtime == "none" and (opts.container_mounts or opts.container_image):
        flag = "--container-mounts" if opts.container_mounts else "--container-image"
        raise RenderError(f"{flag}: needs a container runtime (--runtime pyxis, apptainer or docker)")
    mounts = []
    for text in opts.container_mounts if runtime != "none" else ():
        mounts += check_mounts(text.split(","), "--container-mounts")  # pyxis' own a:b,c:d form, or repeated
    if runtime != "none":
        mounts += check_mounts(site.mounts, site_src + ": mounts")
        # The job's paths, unless a mount above brings them in at their own path already.
        same_path = [m.split(":")[0] for m in mounts if m.split(":")[0] == m.split(":")[1]]
        for m in job_mounts(target, opts.recipe_path):
            path = m.split(":")[0]
            if not any(path == s or path.startswith(s.rstrip("/") + "/") for s in same_path):
                mounts.append(m)
    # One mount per container path: what the user typed, then the site's, then the job's own.
    by_target = {}
    for m in mounts:
        by_target.setdefault(m.split(":")[1], m)
    mounts = list(by_target.values())
    image = opts.container_image if opts.container_image is not None else default_image(target, runtime)
    if runtime != "none" and not image:
        raise RenderError("--container-image: no image given and the recipe's image.name is empty")
    v = vendor(target.vendor)
    # A vendor runtime is only told which devices to give through its variable: without one, none.
    docker_runtime = r.image.runtime if v.container_visible_devices else ""
    gpu_request = c.gpu_request if v.visible_devices else "none"
    env = target.env
    # Inside a container the job's variables are all there is: name each one the container must get.
    env_names = sorted(set(env) | {"PYTHONUNBUFFERED", "SLURM_JOB_ID", "SLURM_RESTART_COUNT"})

    return dict(
        job_name="wmlp-" + job_name(target.name),
        nodes=int(opts.nodes),
        gpus=int(gpus),
        gpu_request=gpu_request,
        cpus_per_task=int(c.cpus_per_task),
        mem=sbatch_value(mem, "mem", where) if mem else "",
        exclusive=bool(opts.exclusive or site.exclusive),
        time=time,
        placement=placement,
        sbatch_args=extra,
        export=",".join(export) if export else "NONE",
        signal=signal_name(c.signal, "cluster.signal"),
        grace=int(c.signal_grace),
        requeue=bool(c.requeue),
        max_requeues=int(c.max_requeues),
        vendor=target.vendor,
        runtime=runtime,
        recipe_ref=target.ref,
        site_name=target.site.name,
        recipe_path=opts.recipe_path,
        run_dir=opts.run_dir,
        run_prefix=target.run_name() + "-",
        master_port=int(c.master_port),
        env=env,
        env_names=env_names,
        mounts=mounts,
        image=image,
        docker_runtime=docker_runtime,
        visible_var=v.visible_devices,
        container_visible_var=v.container_visible_devices,
        docker_devices=list(v.docker_without_runtime),
        docker_devices_why=v.docker_without_runtime_why,
        apptainer_args=list(v.apptainer_args),
        device_files=list(v.device_files),
        bind_device_files=bool(v.bind_device_files),
        device_files_why=v.device_files_why,
        train_args=target.train_args(opts.recipe_path),
    )


def render_sbatch(target: Target, opts: SlurmOptions) -> str:
    return render("slurm", TEMPLATE, **sbatch_context(target, opts))


def submit(script_path: str, sbatch_args: Sequence[str] = ()) -> str:
    """``sbatch --parsable``; the job id (without the cluster name sbatch may add)."""
    return submit_parsable(script_path, sbatch_args).split(";", 1)[0]


def submit_parsable(script_path: str, sbatch_args: Sequence[str] = ()) -> str:
    """``sbatch --parsable``; what it printed, checked: ``ID`` or ``ID;CLUSTER``."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise RenderError("sbatch is not on PATH: submit from a Slurm login node, or use `wmlp slurm render`")
    argv: List[str] = [exe, "--parsable", *sbatch_args, str(script_path)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        why = " ".join((result.stderr or result.stdout).split()) or "no output"
        raise RenderError("sbatch failed (exit {}): {}".format(result.returncode, why))
    printed = result.stdout.strip()
    if not printed.split(";", 1)[0].isdigit():
        raise RenderError("sbatch printed {!r}, not a job id".format(printed))
    return printed
