"""``wmlp``: the command line, a thin face over the library, and the only package that imports click.

One module per command group. At import it loads click and the torch-free side (recipes, job rendering,
image builds); torch, timm and torchvision load inside the commands that need them, so ``wmlp --help``,
``recipes``, ``launch``, ``slurm`` and ``image`` work on a login node without them. Errors leave by one
path (``core.KitGroup``): ``wmlp: error: <one line>``, exit status 2.
"""

import click

from .. import __version__
from .core import KitGroup
from .data import data
from .image import image
from .jobs import launch, slurm
from .measure import bench, profile, report
from .recipes import recipes
from .run import doctor, eval_cmd, smoke, train
from .sites import sites


@click.group(cls=KitGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="wmlp")
def cli() -> None:
    """Train, evaluate, profile and launch Wave-MLP (CVPR 2022) on CUDA and Iluvatar CoreX clusters."""


for _command in (train, eval_cmd, smoke, doctor, data, profile, bench, report, recipes, sites, launch, slurm, image):
    cli.add_command(_command)


def main(argv=None) -> None:
    cli.main(args=argv, prog_name="wmlp")
