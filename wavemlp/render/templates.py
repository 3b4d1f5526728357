"""The Jinja2 environment the launch and sbatch templates render in.

Strict by construction: an undefined name is an error (never an empty string), nothing is
HTML-escaped, and the only ways to put a value into a script are the quoting filters.

Runs on login nodes and inside images: Python 3.8 syntax, no torch.
"""

import jinja2

from ..resources import resource_dir
from .quoting import quote, quote_all


def environment(folder: str) -> jinja2.Environment:
    """Templates of ``launch`` or ``slurm`` (the checkout's folder, or the wheel's copy)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resource_dir(folder))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = quote
    env.filters["qall"] = quote_all
    return env


def render(folder: str, name: str, **context) -> str:
    return environment(folder).get_template(name).render(**context)
