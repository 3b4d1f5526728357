"""Values on their way into a shell script: quoted for the script body, checked for ``#SBATCH`` lines.

Runs on login nodes and inside images: Python 3.8 syntax, no torch.
"""

import re
import shlex
import signal

from ..errors import KitError


class RenderError(KitError):
    """A value that cannot go into a script; the message names the flag or recipe key."""


_PLAIN = re.compile(r"[\x20-\x7e]*")


def quote(value) -> str:
    """One shell word that bash reads back as exactly ``value``.

    Printable text goes through ``shlex.quote``. Anything with control characters (a newline, a tab,
    an escape) becomes a bash ``$'...'`` word with octal escapes instead, so a value never spans lines
    of the rendered script: comments, heredocs and line-oriented tools all stay intact.
    """
    text = str(value)
    if "\0" in text:
        raise RenderError("{!r}: a NUL character cannot be passed to a program".format(text))
    if _PLAIN.fullmatch(text) or text.isprintable():
        return shlex.quote(text)
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        char = chr(byte)
        if char in "\\'":
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append("\\{:03o}".format(byte))  # three digits: a following digit is never read into it
    return "$'" + "".join(out) + "'"


def quote_all(values) -> str:
    return " ".join(quote(v) for v in values)


# --- #SBATCH lines ----------------------------------------------------------------------------------
# sbatch reads its directives itself, without a shell: quoting would be taken literally, so values are
# checked against what Slurm accepts for each option instead, and refused with a one-line error.

_SBATCH_RULES = {
    "name": (r"[A-Za-z0-9_.,+-]+", "letters, digits and _ . , + -"),
    "time": (r"[0-9]+(-[0-9]+)?(:[0-9]+){0,2}|[Uu][Nn][Ll][Ii][Mm][Ii][Tt][Ee][Dd]|[Ii][Nn][Ff][Ii][Nn][Ii][Tt][Ee]",
             "a Slurm time such as 72:00:00, 2-00:00:00, 90 or UNLIMITED"),
    "mem": (r"[0-9]+[KMGTkmgt]?", "a size such as 0, 500G or 64000M"),
    "constraint": (
        r"[A-Za-z0-9_.,&|!*:+\[\]()-]+",
        "a feature expression of letters, digits and _ . , & | ! * : + [ ] ( ) -",
    ),
}


def sbatch_value(value: str, rule: str, source: str) -> str:
    """``value`` if Slurm can read it from an ``#SBATCH`` line, else a RenderError naming ``source``."""
    pattern, allowed = _SBATCH_RULES[rule]
    if not re.fullmatch(pattern, value):
        raise RenderError(
            "{}: {} cannot go into an #SBATCH line (expected {})".format(source, quote(value), allowed)
        )
    return value


def signal_name(value: str, source: str) -> str:
    """``USR1`` for ``USR1``, ``SIGUSR1`` or ``usr1``; a RenderError for anything that is no signal."""
    name = value.upper()
    name = name[3:] if name.startswith("SIG") else name
    if not re.fullmatch(r"[A-Z0-9]+", name) or not hasattr(signal, "SIG" + name):
        raise RenderError("{}: {} is not a signal name (e.g. USR1, TERM)".format(source, quote(value)))
    return name


def job_name(text: str) -> str:
    """A Slurm job name from a recipe name: characters sbatch might misread become '_'."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)[:64] or "wmlp"
