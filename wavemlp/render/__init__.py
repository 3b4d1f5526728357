"""Launch and Slurm scripts rendered from a recipe: every value quoted, nothing run that was not meant to.

Login-node side: may import ``recipe``, ``vendors``, ``resources``, jinja2; never torch, timm or torchvision.
Python 3.8 syntax: it runs inside vendor images too.
"""

from .launch import LaunchPlan, plan_launch, render_launch
from .quoting import RenderError, quote
from .sbatch import SlurmOptions, render_sbatch, submit
from .target import Target, load_target

__all__ = [
    "LaunchPlan",
    "RenderError",
    "SlurmOptions",
    "Target",
    "load_target",
    "plan_launch",
    "quote",
    "render_launch",
    "render_sbatch",
    "submit",
]
