"""Build the kit's container images through the Docker engine.

Runs on the host that builds (Python 3.10+), talks to the engine through the docker SDK, and never imports
torch: the base image's torch is looked at inside a throwaway container of that image instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import KitError
from ..vendors import dockerfile_vendor, dockerfiles
from .targets import check_target, image_settings

# By Dockerfile kind; the targets are the recipes with an image (targets.image_targets()), each with its
# own pins in docker/constraints/<target>.txt.
DOCKERFILES = {kind: dockerfile_vendor(kind).dockerfile_path for kind in dockerfiles()}
DEFAULT_BASES = {kind: dockerfile_vendor(kind).base_image for kind in dockerfiles()}
CA_BUILD_ARG = "EXTRA_CA_CERTS"
# Runs inside the images (and in a container of the base, to probe it) on the base's own Python.
_PROVISION = Path(__file__).with_name("provision.py")
# Lines the classic builder prints around each step; the rest is what the steps themselves print.
_ENGINE_CHATTER = re.compile(r"^(Step \d+/\d+ :| ---> |Removing intermediate container|Successfully (built|tagged))")
# Build args reach RUN steps as environment variables, and Linux caps one at 128 KiB.
MAX_EXTRA_CA_BYTES = 64 * 1024
_PROBE_MARK = "WAVEMLP-PROBE "  # provision.py's PROBE_MARK (that file is a script for the base's Python)


class ImageBuildError(RuntimeError):
    """A build that cannot start or did not finish; the message is one line meant for the user."""


@dataclass(frozen=True)
class BaseInfo:
    """What a base image's own Python imports (probed in a container of it)."""

    python_version: str
    torch_version: str
    torch_file: str
    torchvision_version: str | None
    cuda: str | None
    corex_sdk: str | None


def resolve(target: str, dockerfile: str | None = None, base: str | None = None) -> tuple[str, str]:
    """(dockerfile kind, base image) for a target: the arguments, else the target recipe's, else its vendor's."""
    try:
        return image_settings(check_target(target).recipe, dockerfile, base)
    except KitError as exc:
        raise ImageBuildError(str(exc)) from None


def default_tag(target: str) -> str:
    return f"wavemlp-kit:{target}"


def check_context(context: Path, target: str, kind: str) -> None:
    needed = [DOCKERFILES[kind], f"docker/constraints/{target}.txt", "pyproject.toml", "wavemlp/image/provision.py"]
    missing = [p for p in needed if not (context / p).is_file()]
    if missing:
        raise ImageBuildError(f"build context {context} lacks {', '.join(missing)} (is it the kit's source tree?)")


def read_extra_ca(path: Path) -> str:
    """The PEM text of extra CA certificates (a bundle or a single certificate)."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ImageBuildError(f"cannot read extra CA certificates {path}: {exc.strerror}") from exc
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ImageBuildError(f"extra CA file {path} holds no PEM certificate")
    if len(text.encode()) > MAX_EXTRA_CA_BYTES:
        raise ImageBuildError(
            f"extra CA file {path} is {len(text.encode()) // 1024} KiB: pass only your site's own CA certificates "
            f"(they are added to the public roots), not a whole system bundle (limit {MAX_EXTRA_CA_BYTES // 1024} KiB)"
        )
    return text.strip() + "\n"


def source_build_args(context: Path) -> dict[str, str]:
    """Labels that come from the source tree: commit (with -dirty for local changes) and kit version."""
    args = {"GIT_COMMIT": "unknown", "KIT_VERSION": "unknown"}
    try:
        git = ["git", "-C", str(context)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], check=False, capture_output=True, text=True)
        if head.returncode == 0:
            status = [*git, "status", "--porcelain", "--untracked-files=no"]
            dirty = subprocess.run(status, check=False, capture_output=True, text=True).stdout.strip()
            args["GIT_COMMIT"] = head.stdout.strip() + ("-dirty" if dirty else "")
    except OSError:  # no git on this host: the label says unknown
        pass
    # Read, not imported: importing the package would import torch on the host.
    init = context / "wavemlp" / "__init__.py"
    match = re.search(
        r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", init.read_text() if init.is_file() else "", re.MULTILINE
    )
    if match:
        args["KIT_VERSION"] = match.group(1)
    return args


def base_build_args(info: BaseInfo, kind: str) -> dict[str, str]:
    vendor = dockerfile_vendor(kind)
    return {"TORCH_VERSION": info.torch_version, vendor.sdk_build_arg: getattr(info, vendor.sdk_probe_key) or ""}


def compose_build_args(
    target: str,
    kind: str,
    base: str,
    context: Path,
    build_args: Mapping[str, str] | None = None,
    base_info: BaseInfo | None = None,
) -> dict[str, str]:
    """All build args: from the sources, from the probed base, then the caller's (which win over those)."""
    args = {"BASE_IMAGE": base, "TARGET": target, **source_build_args(context)}
    if base_info is not None:
        args.update(base_build_args(base_info, kind))
    args.update({k: str(v) for k, v in (build_args or {}).items()})
    if CA_BUILD_ARG in args:
        raise ImageBuildError(f"pass extra CA certificates as extra_ca (a file), not as build arg {CA_BUILD_ARG}")
    # Target and base are chosen by the parameters; a build arg must not quietly contradict them.
    args["BASE_IMAGE"], args["TARGET"] = base, target
    return args


def docker_build_command(
    target: str,
    dockerfile: str | None = None,
    base: str | None = None,
    tag: str | None = None,
    context: Path = Path("."),
    build_args: Mapping[str, str] | None = None,
    extra_ca: Path | None = None,
    base_info: BaseInfo | None = None,
) -> list[str]:
    """The `docker build` command equivalent to build_image (for --print, or to run by hand).

    With extra_ca, the command reads the certificates from the environment variable EXTRA_CA_CERTS
    (`--build-arg EXTRA_CA_CERTS` without a value), so they never appear on a command line: run it with
    build_env(extra_ca), or print it with format_command.
    """
    kind, base = resolve(target, dockerfile, base)
    context = Path(context)
    args = compose_build_args(target, kind, base, context, build_args, base_info)
    cmd = [
        "docker",
        "build",
        "--network",
        "host",
        "-f",
        str(context / DOCKERFILES[kind]),
        "-t",
        tag or default_tag(target),
    ]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if extra_ca is not None:
        cmd += ["--build-arg", CA_BUILD_ARG]
    return cmd + [str(context)]


def build_env(extra_ca: Path | None, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment to run docker_build_command's command in."""
    env = dict(os.environ if environ is None else environ)
    if extra_ca is not None:
        env[CA_BUILD_ARG] = read_extra_ca(extra_ca)
    return env


def format_command(cmd: list[str], extra_ca: Path | None = None) -> str:
    """A shell line for cmd; with extra_ca it first loads the certificates into EXTRA_CA_CERTS."""
    line = shlex.join(cmd)
    if extra_ca is not None:
        line = f'{CA_BUILD_ARG}="$(cat {shlex.quote(str(extra_ca))})" {line}'
    return line


def connect():
    """A docker SDK client for DOCKER_HOST (or the default socket), or a one-line ImageBuildError."""
    try:
        import docker
    except ImportError as exc:
        raise ImageBuildError("the docker Python SDK is missing: pip install docker") from exc
    host = os.environ.get("DOCKER_HOST")
    where = f"DOCKER_HOST={host}" if host else "the default socket (DOCKER_HOST is unset)"
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        reason = _one_line(str(exc))
        raise ImageBuildError(
            f"cannot reach the Docker engine at {where}: {reason}; start dockerd or point DOCKER_HOST at it"
        ) from exc
    return client


def require_base(client, base: str, kind: str) -> None:
    import docker

    try:
        client.images.get(base)
    except docker.errors.ImageNotFound:
        how = dockerfile_vendor(kind).base_missing_hint.format(base=base)
        raise ImageBuildError(f"base image {base} is not in the local Docker engine; {how}") from None


def probe_base(client, base: str, python: str = "python3") -> BaseInfo:
    """Run the base image's Python once to learn its torch; ImageBuildError when it has none."""
    import docker

    # The entrypoint is replaced: vendor entrypoints (NGC's banner) would mix their output with the probe's.
    try:
        out = client.containers.run(
            base,
            entrypoint=[python, "-c", _PROVISION.read_text(), "probe"],
            command=[],
            network_mode="none",
            remove=True,
            stdout=True,
            stderr=False,
            user="0",
        )
    except docker.errors.ContainerError as exc:
        detail = _one_line((exc.stderr or b"").decode(errors="replace")) or f"exit {exc.exit_status}"
        raise ImageBuildError(f"base image {base}: its {python} failed ({detail})") from exc
    except docker.errors.APIError as exc:
        raise ImageBuildError(
            f"base image {base} cannot run {python}: {_one_line(exc.explanation or str(exc))}"
        ) from exc
    info = _parse_probe(out.decode(errors="replace"), base)
    torch = info.get("torch") or {}
    if "error" in torch:
        raise ImageBuildError(
            f"base image {base} holds no importable torch ({torch['error']}); the kit installs on the vendor's "
            f"PyTorch image and never takes torch from PyPI"
        )
    tv = info.get("torchvision") or {}
    return BaseInfo(
        python_version=info["python_version"],
        torch_version=torch["version"],
        torch_file=torch["file"],
        torchvision_version=tv.get("version"),
        cuda=info.get("cuda"),
        corex_sdk=info.get("corex_sdk"),
    )


def build_image(
    target: str,
    dockerfile: str | None = None,
    base: str | None = None,
    tag: str | None = None,
    context: Path = Path("."),
    build_args: Mapping[str, str] | None = None,
    extra_ca: Path | None = None,
    stream: Callable[[str], Any] | None = print,
    client=None,
    probe: bool = True,
) -> str:
    """Build the image of `target` and return its id, streaming the engine's output line by line.

    `dockerfile` (a key of DOCKERFILES) and `base` default from the target's recipe, then its vendor. The base
    must already be in the engine (builds never pull). With `probe`, the base's torch is checked and its
    versions go into labels.
    """
    kind, base = resolve(target, dockerfile, base)
    context = Path(context).resolve()
    check_context(context, target, kind)
    tag = tag or default_tag(target)
    client = client or connect()
    require_base(client, base, kind)
    python = (build_args or {}).get("PYTHON", "python3")
    info = probe_base(client, base, python) if probe else None
    args = compose_build_args(target, kind, base, context, build_args, info)
    if extra_ca is not None:
        args[CA_BUILD_ARG] = read_extra_ca(extra_ca)
    emit = stream or (lambda line: None)
    try:
        chunks = client.api.build(
            path=str(context),
            dockerfile=DOCKERFILES[kind],
            tag=tag,
            buildargs=args,
            network_mode="host",
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        image_id = _follow(chunks, emit, tag)
    except ImageBuildError:
        raise
    except Exception as exc:  # the SDK raises APIError, requests' errors, OSError for the context...
        raise ImageBuildError(f"docker build of {tag} failed: {_one_line(str(exc))}") from exc
    return image_id or client.images.get(tag).id


def _follow(chunks: Iterable[dict], emit: Callable[[str], Any], tag: str) -> str | None:
    image_id, why, last = None, None, None
    for chunk in chunks:
        if "error" in chunk:
            # The engine's own error only gives the exit code: lead with what the failing step printed.
            reason = why or last
            detail = _one_line(chunk["error"])
            raise ImageBuildError(f"docker build of {tag} failed: {reason + '; ' if reason else ''}{detail}")
        if "aux" in chunk and isinstance(chunk["aux"], dict) and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        text = chunk.get("stream") or chunk.get("status") or ""
        for line in text.splitlines():
            line = line.rstrip()
            if not line.strip():
                continue
            emit(line)
            if "wavemlp image error:" in line:
                why = line.split("wavemlp image error:", 1)[1].strip()
            elif not _ENGINE_CHATTER.match(line):
                last = _one_line(line)
    return image_id


def _parse_probe(output: str, base: str) -> dict:
    for line in output.splitlines():
        if line.startswith(_PROBE_MARK):
            return json.loads(line[len(_PROBE_MARK) :])
    raise ImageBuildError(f"base image {base}: the torch probe printed nothing usable ({_one_line(output)!r})")


def _one_line(text: str, limit: int = 300) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
