"""``wmlp launch``: one node of a torchrun job, as a shell script rendered from ``launch/torchrun.sh.j2``.

Runs on login nodes and inside images: Python 3.8 syntax, no torch.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence

from .quoting import RenderError, job_name, quote_all
from .target import Target
from .templates import render

TEMPLATE = "torchrun.sh.j2"


class LaunchPlan(NamedTuple):
    target: Target
    nodes: int
    gpus: int
    node_rank: int
    master_addr: Optional[str]
    master_port: Optional[int]  # None: standalone (one node, a free port)
    run_dir: str
    extra_args: List[str]

    @property
    def script_path(self) -> Path:
        """Where ``wmlp launch`` keeps the script it runs: in the run folder, beside its logs."""
        return Path(self.run_dir) / "launch-node{}.sh".format(self.node_rank)

    def command(self) -> List[str]:
        return ["bash", str(self.script_path)]

    @property
    def standalone(self) -> bool:
        """One node and no --master-port: torchrun's standalone rendezvous (see :func:`plan_launch`)."""
        return self.master_port is None


def recipe_beside(script: Path) -> Path:
    """The resolved recipe a script trains from: beside it, ``job.sh`` -> ``job.recipe.yaml``."""
    script = Path(script).absolute()
    return script.with_name(script.name.rsplit(".", 1)[0] + ".recipe.yaml")


def plan_launch(
    target: Target,
    nodes: int = 1,
    gpus: Optional[int] = None,
    node_rank: int = 0,
    master_addr: Optional[str] = None,
    master_port: Optional[int] = None,
    run_dir: Optional[str] = None,
    extra_args: Sequence[str] = (),
) -> LaunchPlan:
    if nodes < 1:
        raise RenderError("--nodes: {} is not a node count (1 or more)".format(nodes))
    if not 0 <= node_rank < nodes:
        raise RenderError("--node-rank: {} is not in [0, {}] for --nodes {}".format(node_rank, nodes - 1, nodes))
    if gpus is None:
        gpus = target.recipe.hardware.devices_per_node
    if gpus < 1:
        raise RenderError("--gpus: {} is not a process count (1 or more)".format(gpus))
    if nodes == 1 and master_port is None:
        # torchrun's standalone rendezvous: a free local port, so that two launches on one host never join
        # each other's (a fixed port would); --master-addr alone changes nothing on one node.
        return LaunchPlan(target, nodes, gpus, node_rank, None, None, run_dir or target.run_name(), list(extra_args))
    if not master_addr:
        if nodes > 1:
            # Every node must reach the same address; guessing this host's would hang the others.
            raise RenderError("--master-addr: required with --nodes {} (the address of the node with rank 0)".format(
                nodes))
        master_addr = "127.0.0.1"
    port = target.recipe.cluster.master_port if master_port is None else master_port
    if not 1 <= port <= 65535:
        raise RenderError("--master-port: {} is not a TCP port".format(port))
    return LaunchPlan(target, nodes, gpus, node_rank, master_addr, port, run_dir or target.run_name(),
                      list(extra_args))


def render_launch(plan: LaunchPlan, script: Optional[Path] = None) -> str:
    """The script for ``script`` (default: the plan's own path); it trains from the recipe beside it."""
    t = plan.target
    recipe_path = recipe_beside(script or plan.script_path)
    return render(
        "launch",
        TEMPLATE,
        recipe_ref=t.ref,
        nodes=int(plan.nodes),
        gpus=int(plan.gpus),
        node_rank=int(plan.node_rank),
        run_dir=plan.run_dir,
        env=t.env,
        endpoint=None if plan.standalone else "{}:{}".format(plan.master_addr, int(plan.master_port)),
        rdzv_id="wmlp-" + job_name(Path(plan.run_dir).name),
        recipe_path=str(recipe_path),
        train_args=t.train_args(recipe_path),
        extra_args=plan.extra_args,
    )


def dry_run_text(plan: LaunchPlan) -> str:
    """The script, then the command that would run it, as comments (the whole stays a valid script)."""
    return "{}\n# wmlp launch --dry-run: would write the script above to {}, the resolved recipe to {}, and run\n" \
        "#   {}\n".format(render_launch(plan), quote_all([str(plan.script_path)]),
                         quote_all([str(recipe_beside(plan.script_path))]), quote_all(plan.command()))


def write_job(plan: LaunchPlan, path: Path) -> Path:
    """The script and, beside it, the resolved recipe it trains from."""
    plan.target.write_resolved(recipe_beside(path))
    return write_script(render_launch(plan, path), path)


def write_script(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
    return path


def run_script(plan: LaunchPlan) -> int:
    """Write the script into the run folder and run it; its exit status (128+N for signal N) is returned:
    the trainers' own (see wavemlp.engine.signals), else torchrun's."""
    write_job(plan, plan.script_path)
    env = dict(os.environ)
    env.setdefault("WMLP_PYTHON", sys.executable)
    return run_forwarding(plan.command(), env)


def run_forwarding(argv: Sequence[str], env) -> int:
    """Run a child to its end; a TERM, INT or HUP sent to us goes on to it (the launch script makes the
    trainers checkpoint and stop), and we wait for it rather than abandon it mid-checkpoint. Ctrl-C reaches
    the child twice (from the terminal and from us): the script acts on the first."""
    proc = subprocess.Popen(list(argv), env=env)
    forwarded = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, _frame: proc.send_signal(signum)) for sig in forwarded}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
