"""``wmlp slurm render|submit``: a batch script from ``slurm/job.sbatch.j2``, and its submission.

Runs on login nodes and inside images: Python 3.8 syntax, no torch.
"""

import shutil
import subprocess
from typing import List, NamedTuple, Optional, Sequence

from ..vendors import vendor
from .quoting import RenderError, job_name, sbatch_value, signal_name
from .target import Target, check_mounts
from .templates import render

TEMPLATE = "job.sbatch.j2"
RUNTIMES = ("none", "pyxis", "apptainer", "docker")


class SlurmOptions(NamedTuple):
    """Flags of ``wmlp slurm render``; None means: the recipe's ``cluster``/``image`` value."""

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


def _pick(flag_value, recipe_value, flag: str, key: str):
    """(value, where it came from): errors name the flag when the user typed it, else the recipe key."""
    if flag_value is not None:
        return flag_value, flag
    return recipe_value, key


def default_image(target: Target, runtime: str) -> str:
    """The recipe's image as each runtime names it: apptainer runs a SIF file (made once with
    ``apptainer build wavemlp-kit_<tag>.sif docker-daemon://wavemlp-kit:<tag>``), the others an image name."""
    if runtime == "apptainer":
        i = target.recipe.image
        return "{}.sif".format("_".join(p for p in (i.name, i.tag) if p)) if i.name else ""
    return target.image_ref()


def sbatch_context(target: Target, opts: SlurmOptions) -> dict:
    r = target.recipe
    c = r.cluster
    if opts.nodes < 1:
        raise RenderError("--nodes: {} is not a node count (1 or more)".format(opts.nodes))
    gpus = r.hardware.devices_per_node if opts.gpus_per_node is None else opts.gpus_per_node
    if gpus < 1:
        raise RenderError("--gpus-per-node: {} is not a count (1 or more)".format(gpus))
    runtime, where = _pick(opts.runtime, c.container_runtime, "--runtime", "cluster.container_runtime")
    if runtime not in RUNTIMES:
        raise RenderError("{}: {!r} is not one of {}".format(where, runtime, ", ".join(RUNTIMES)))
    if c.master_port + 999 > 65535:
        raise RenderError("cluster.master_port: {} leaves no room for the per-job offset (0-999)".format(c.master_port))

    time, where = _pick(opts.time, c.time, "--time", "cluster.time")
    placement = []
    for option, flag_value, recipe_value, rule in (
        ("partition", opts.partition, c.partition, "name"),
        ("account", opts.account, c.account, "name"),
        ("qos", opts.qos, c.qos, "name"),
        ("constraint", opts.constraint, c.constraint, "constraint"),
    ):
        value, source = _pick(flag_value, recipe_value, "--" + option, "cluster." + option)
        if value:
            placement.append((option, sbatch_value(value, rule, source)))

    if runtime == "none" and (opts.container_mounts or opts.container_image):
        flag = "--container-mounts" if opts.container_mounts else "--container-image"
        raise RenderError(f"{flag}: needs a container runtime (--runtime pyxis, apptainer or docker)")
    mounts = check_mounts(c.container_mounts, "cluster.container_mounts")
    for text in opts.container_mounts:
        mounts += check_mounts(text.split(","), "--container-mounts")  # pyxis' own a:b,c:d form, or repeated
    image = opts.container_image if opts.container_image is not None else default_image(target, runtime)
    if runtime != "none" and not image:
        raise RenderError("--container-image: no image given and the recipe's image.name is empty")
    v = vendor(target.vendor)
    # A vendor runtime is only told which devices to give through its variable: without one, none.
    docker_runtime = r.image.runtime if v.container_visible_devices else ""

    return dict(
        job_name="wmlp-" + job_name(target.name),
        nodes=int(opts.nodes),
        gpus=int(gpus),
        gpu_request=c.gpu_request,
        cpus_per_task=int(c.cpus_per_task),
        mem=sbatch_value(c.mem, "mem", "cluster.mem"),
        time=sbatch_value(time, "time", where),
        placement=placement,
        signal=signal_name(c.signal, "cluster.signal"),
        grace=int(c.signal_grace),
        requeue=bool(c.requeue),
        vendor=target.vendor,
        runtime=runtime,
        recipe_ref=target.ref,
        run_dir=opts.run_dir,
        run_prefix=target.run_name() + "-",
        master_port=int(c.master_port),
        env=target.env,
        env_names=sorted(target.env) + ["PYTHONUNBUFFERED"],
        mounts=mounts,
        image=image,
        docker_runtime=docker_runtime,
        visible_var=v.container_visible_devices,
        docker_devices=list(v.docker_without_runtime),
        docker_devices_why=v.docker_without_runtime_why,
        apptainer_args=list(v.apptainer_args),
        device_files=list(v.device_files) if v.bind_device_files else [],
        device_files_why=v.device_files_why,
        recipe_path=opts.recipe_path,
        train_args=target.train_args(opts.recipe_path),
    )


def render_sbatch(target: Target, opts: SlurmOptions) -> str:
    return render("slurm", TEMPLATE, **sbatch_context(target, opts))


def submit(script_path: str, sbatch_args: Sequence[str] = ()) -> str:
    """``sbatch --parsable``; the job id (without the cluster name sbatch may add)."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise RenderError("sbatch is not on PATH: submit from a Slurm login node, or use `wmlp slurm render`")
    argv: List[str] = [exe, "--parsable", *sbatch_args, str(script_path)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        why = " ".join((result.stderr or result.stdout).split()) or "no output"
        raise RenderError("sbatch failed (exit {}): {}".format(result.returncode, why))
    job_id = result.stdout.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise RenderError("sbatch printed {!r}, not a job id".format(result.stdout.strip()))
    return job_id
