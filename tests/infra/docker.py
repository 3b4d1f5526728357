"""A private Docker engine and registry-free stand-in base images, started by the tests themselves.

No registry is reachable here and no vendor image is public, so the bases are made locally: a Debian
bookworm minbase rootfs from debootstrap, imported into the engine, then
- the CoreX stand-in: Debian's python3-torch 1.13.1 / python3-torchvision 0.14.1 in the system Python (an
  old vendor-like torch, reporting 1.13.0a0) and a fake ``ixsmi`` in /usr/local/corex/bin;
- the CUDA stand-in: torch 2.14.1 / torchvision 0.29.1 (the CUDA wheels pip finds, from this machine's disk
  here) in the system Python's /usr/local/lib/python3.11/dist-packages, as NGC keeps its torch.
Both are tagged with the default base names of the Dockerfiles, so builds use them without pulling.

Environment knobs for developers (CI sets neither):
- WAVEMLP_TEST_DOCKER_ROOT: keep the engine's data there between runs, and reuse stand-ins whose recipe
  did not change (a cold start builds them in about 3.5 minutes).
- WAVEMLP_TEST_CACHE: keep the debootstrap rootfs tarball there (saves about 45 s when the data root is new).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL_HINT = "bash .ci/install-docker.sh (apt: docker.io debootstrap; pip: docker)"
SUITE = "bookworm"
DEBIAN_IMAGE = "wavemlp-standin/debian:bookworm"
COREX_IMAGE = "wavemlp-standin/corex:torch1.13"
CUDA_IMAGE = "wavemlp-standin/cuda:torch2.14.1"
# The pins of the dev/CI venv: pip takes them from this machine's disk, not the network.
CUDA_TORCH = ("torch==2.14.1", "torchvision==0.29.1")
STANDIN_LABEL = "io.wavemlp.standin.recipe"

_COREX_DOCKERFILE = """\
FROM {debian}
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3-torch python3-torchvision \\
 && rm -rf /var/lib/apt/lists/*
RUN mkdir -p /usr/local/corex/bin /usr/local/corex/lib64 \\
 && printf '#!/bin/sh\\necho "ixsmi (wavemlp test stand-in): no Iluvatar device"\\n' > /usr/local/corex/bin/ixsmi \\
 && chmod 755 /usr/local/corex/bin/ixsmi
ENV PATH=/usr/local/corex/bin:$PATH
LABEL {label}={recipe}
"""


def unavailable(reason: str) -> None:
    """Fail loudly in CI (where the suite must install what it needs); skip elsewhere, saying how to fix."""
    message = f"{reason}; install with: {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def missing_tools() -> list[str]:
    missing = [tool for tool in ("dockerd", "docker", "debootstrap") if shutil.which(tool) is None]
    try:
        import docker  # noqa: F401
    except ImportError:
        missing.append("python docker SDK")
    if os.geteuid() != 0:
        missing.append("root (dockerd and debootstrap need it)")
    return missing


@dataclass
class DockerEngine:
    host: str
    root: Path
    process: subprocess.Popen
    client: object  # docker.DockerClient

    def run(
        self,
        image: str,
        command: list[str],
        entrypoint: list[str] | None = None,
        user: str | None = None,
        timeout: float = 600,
    ) -> str:
        """Run a throwaway container, return its stdout; raise with its stderr when it fails."""
        cmd = ["docker", "run", "--rm", "--network", "host"]
        if entrypoint is not None:
            cmd += ["--entrypoint", entrypoint[0]]
        if user is not None:
            cmd += ["--user", user]
        cmd += [image, *(entrypoint[1:] if entrypoint else []), *command]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(cmd[:8])}... exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done.stdout

    def has_image(self, name: str, recipe: str | None = None) -> bool:
        import docker

        try:
            image = self.client.images.get(name)
        except docker.errors.ImageNotFound:
            return False
        return recipe is None or (image.labels or {}).get(STANDIN_LABEL) == recipe


def start_dockerd(
    root: Path,
    timeout: float = 60,
    socket: Path | None = None,
    hostname: str | None = None,
    data_root: Path | None = None,
    hosts_file: Path | None = None,
) -> tuple[subprocess.Popen, str]:
    """dockerd on a private socket, without bridge or iptables (builds and runs use the host network).

    ``socket`` defaults to ``root/docker.sock``, ``data_root`` to ``root/data``. With ``hostname``, dockerd
    runs in a UTS namespace of its own with that host name, which its host-network containers then report
    (a fake node's engine); with ``hosts_file`` as well, in a mount namespace of its own too, where that file
    is /etc/hosts: host-network containers get a copy of the engine's /etc/hosts.
    """
    root.mkdir(parents=True, exist_ok=True)
    host = f"unix://{socket or root / 'docker.sock'}"
    log = open(root / "dockerd.log", "ab")  # noqa: SIM115 - the daemon writes to it for the whole session
    # unshare execs the shell, which sets the name (and mounts the hosts file) and execs dockerd: proc.pid
    # is dockerd's pid. The mounts dockerd makes then live in its namespace and go with it.
    uts: list[str] = []
    if hostname and hosts_file:
        uts = ["unshare", "--uts", "--mount", "--propagation=private", "sh", "-c",
               'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"', hostname, str(hosts_file)]
    elif hostname:
        uts = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname]
    proc = subprocess.Popen(
        [
            *uts,
            "dockerd",
            "--data-root",
            str(data_root or root / "data"),
            "--exec-root",
            str(root / "exec"),
            "--pidfile",
            str(root / "dockerd.pid"),
            "-H",
            host,
            "--storage-driver=overlay2",
            "--iptables=false",
            "--bridge=none",
            "--ip-forward=false",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + timeout
    env = {**os.environ, "DOCKER_HOST": host}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited with {proc.returncode}: {_tail(root / 'dockerd.log')}")
        if subprocess.run(["docker", "info"], env=env, capture_output=True, check=False).returncode == 0:
            return proc, host
        time.sleep(0.3)
    stop_dockerd(proc)
    raise RuntimeError(f"dockerd did not answer within {timeout:.0f} s: {_tail(root / 'dockerd.log')}")


def stop_dockerd(proc: subprocess.Popen, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)  # dockerd stops its containers and its own containerd
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def remove_engine_root(root: Path) -> None:
    """Delete an engine's directory, unmounting what dockerd leaves mounted there (its netns, stray layers)."""
    prefix = str(root.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    # rm -rf is several times faster than shutil.rmtree on the stand-ins' many small files.
    subprocess.run(["rm", "-rf", "--one-file-system", str(root)], capture_output=True, check=False)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """A private dockerd for the session, with DOCKER_HOST pointing at it (restored afterwards)."""
    missing = missing_tools()
    if missing:
        unavailable(f"the image tests need {', '.join(missing)}")
    import docker

    keep = os.environ.get("WAVEMLP_TEST_DOCKER_ROOT")
    # Short path: the socket path of dockerd's containerd must stay under the 108-byte unix limit.
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="wmlp-dockerd-", dir="/tmp"))
    try:
        proc, host = start_dockerd(root)
    except RuntimeError as exc:
        unavailable(f"could not start a private dockerd in {root}: {exc}")
    patch = pytest.MonkeyPatch()
    patch.setenv("DOCKER_HOST", host)
    # The classic builder: the client here has no buildx, and both builders must work with the Dockerfiles.
    patch.delenv("DOCKER_BUILDKIT", raising=False)
    patch.delenv("DOCKER_CONTEXT", raising=False)
    client = docker.DockerClient(base_url=host, timeout=600)
    try:
        yield DockerEngine(host=host, root=root, process=proc, client=client)
    finally:
        client.close()
        patch.undo()
        stop_dockerd(proc)
        if not keep:
            remove_engine_root(root)


def apt_mirror() -> str:
    """The Debian mirror this host's apt uses (the only one reachable here)."""
    sources = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for path in sources:
        text = path.read_text() if path.is_file() else ""
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and len(words) > 2 and "security" not in words[1]:
                return words[2] if words[1].startswith("[") else words[1]
    return "http://deb.debian.org/debian"


@pytest.fixture(scope="session")
def debian_rootfs(docker_engine: DockerEngine) -> Path:
    """A tarball of a Debian bookworm minbase rootfs with python3 and pip (vendor images have both)."""
    cache = os.environ.get("WAVEMLP_TEST_CACHE")
    # Beside the engine's data unless cached: it goes when the engine's directory goes.
    tarball = Path(cache or docker_engine.root) / f"debian-{SUITE}-minbase.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("debootstrap") is None:
        unavailable("the stand-in base images need debootstrap")
    tree = Path(tempfile.mkdtemp(prefix="wmlp-rootfs-", dir="/tmp"))
    try:
        done = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3,python3-pip", SUITE, str(tree), apt_mirror()],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
        shutil.rmtree(tree / "var/cache/apt/archives", ignore_errors=True)
        (tree / "var/cache/apt/archives/partial").mkdir(parents=True)
        tarball.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-C", str(tree), "-cf", f"{tarball}.part", "."], check=True)
        os.replace(f"{tarball}.part", tarball)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    return tarball


def _recipe(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def docker_import(tar_stream_cmd: list[str], name: str, changes: list[str]) -> None:
    """`docker import` the tar written to stdout by tar_stream_cmd (no copy of it on disk)."""
    producer = subprocess.Popen(tar_stream_cmd, stdout=subprocess.PIPE)
    cmd = ["docker", "import"]
    for change in changes:
        cmd += ["--change", change]
    done = subprocess.run([*cmd, "-", name], stdin=producer.stdout, capture_output=True, text=True, check=False)
    producer.stdout.close()
    if producer.wait() != 0 or done.returncode != 0:
        raise RuntimeError(f"docker import of {name} failed: {done.stderr.strip()}")


@pytest.fixture(scope="session")
def debian_image(docker_engine: DockerEngine, debian_rootfs: Path) -> str:
    recipe = _recipe(SUITE, debian_rootfs.stat().st_size)
    if not docker_engine.has_image(DEBIAN_IMAGE, recipe):
        docker_import(["cat", str(debian_rootfs)], DEBIAN_IMAGE, [f"LABEL {STANDIN_LABEL}={recipe}", 'CMD ["bash"]'])
    return DEBIAN_IMAGE


@dataclass(frozen=True)
class StandIn:
    """A stand-in base image and what its system Python imports as torch (probed, not assumed)."""

    image: str
    tags: tuple[str, ...]
    torch_version: str
    torch_file: str
    torchvision_version: str
    torchvision_file: str
    seconds: float  # time it took to make (0 when reused)


def probe_torch(engine: DockerEngine, image: str) -> dict[str, str]:
    code = (
        "import json, os, torch, torchvision; print(json.dumps({'torch': torch.__version__, "
        "'torch_file': os.path.realpath(torch.__file__), 'torchvision': torchvision.__version__, "
        "'torchvision_file': os.path.realpath(torchvision.__file__)}))"
    )
    return json.loads(engine.run(image, ["-c", code], entrypoint=["python3"]).strip().splitlines()[-1])


def _standin(engine: DockerEngine, image: str, tags: tuple[str, ...], seconds: float) -> StandIn:
    for tag in tags:
        engine.client.images.get(image).tag(tag)
    found = probe_torch(engine, image)
    return StandIn(
        image, tags, found["torch"], found["torch_file"], found["torchvision"], found["torchvision_file"], seconds
    )


@pytest.fixture(scope="session")
def corex_standin(docker_engine: DockerEngine, debian_image: str) -> StandIn:
    """Old vendor-like torch (Debian's 1.13.1) in the system Python, fake ixsmi; tagged corex:4.2.0."""
    recipe = _recipe(_COREX_DOCKERFILE, docker_engine.client.images.get(debian_image).id)
    start = time.monotonic()
    if not docker_engine.has_image(COREX_IMAGE, recipe):
        dockerfile = _COREX_DOCKERFILE.format(debian=debian_image, label=STANDIN_LABEL, recipe=recipe)
        _build_from_text(docker_engine, dockerfile, COREX_IMAGE)
    return _standin(docker_engine, COREX_IMAGE, ("corex:4.2.0",), time.monotonic() - start)


@pytest.fixture(scope="session")
def cuda_standin(docker_engine: DockerEngine, debian_image: str, debian_rootfs: Path) -> StandIn:
    """Current CUDA torch wheels in the system Python, as NGC ships them; tagged nvcr.io/nvidia/pytorch:24.05-py3."""
    recipe = _recipe(CUDA_TORCH, docker_engine.client.images.get(debian_image).id)
    start = time.monotonic()
    if not docker_engine.has_image(CUDA_IMAGE, recipe):
        tree = Path(tempfile.mkdtemp(prefix="wmlp-cuda-", dir="/tmp"))
        try:
            subprocess.run(["tar", "-C", str(tree), "-xf", str(debian_rootfs)], check=True)
            site = tree / "usr/local/lib/python3.11/dist-packages"
            site.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--target",
                    str(site),
                    *_foreign_python_flags(),
                    *CUDA_TORCH,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"pip could not lay out {CUDA_TORCH}: {done.stderr[-3000:]}")
            # pip --target also writes console scripts under the target; NGC has them on PATH.
            scripts = site / "bin"
            if scripts.is_dir():
                for script in scripts.iterdir():
                    shutil.move(str(script), tree / "usr/local/bin" / script.name)
                scripts.rmdir()
            # NGC pins its own builds for pip the same way; the kit's build must live with that.
            pins = "".join(f"{pin.split('==')[0]}=={_version_in(site, pin)}\n" for pin in CUDA_TORCH)
            (tree / "etc/pip").mkdir(parents=True, exist_ok=True)
            (tree / "etc/pip/constraint.txt").write_text(pins)
            docker_import(
                ["tar", "-C", str(tree), "-c", "."],
                CUDA_IMAGE,
                [
                    f"LABEL {STANDIN_LABEL}={recipe}",
                    "ENV PIP_CONSTRAINT=/etc/pip/constraint.txt",
                    'CMD ["bash"]',
                ],
            )
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", str(tree)], check=False)
    return _standin(docker_engine, CUDA_IMAGE, ("nvcr.io/nvidia/pytorch:24.05-py3",), time.monotonic() - start)


def _version_in(site: Path, pin: str) -> str:
    """The full installed version (with its local tag, e.g. 2.14.1+cu130) of a pinned name."""
    name = pin.split("==")[0]
    for meta in site.glob(f"{name}-*.dist-info/METADATA"):
        for line in meta.read_text(errors="replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    return pin.split("==")[1]


def _foreign_python_flags() -> list[str]:
    """pip flags to fetch wheels for bookworm's CPython 3.11 when the tests run on another Python."""
    if sys.version_info[:2] == (3, 11) and sys.platform == "linux":
        return []
    glibc = [f"manylinux_2_{minor}_x86_64" for minor in range(5, 37)]
    platforms = ["manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64", *glibc]
    flags = ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:"]
    for platform in platforms:
        flags += ["--platform", platform]
    return flags


def _build_from_text(engine: DockerEngine, dockerfile: str, tag: str) -> None:
    try:
        engine.client.images.build(
            fileobj=io.BytesIO(dockerfile.encode()), tag=tag, network_mode="host", rm=True, forcerm=True
        )
    except Exception as exc:  # docker.errors.BuildError carries the log
        log = "".join(chunk.get("stream", "") for chunk in getattr(exc, "build_log", []) or [])
        raise RuntimeError(f"building {tag} failed: {exc}\n{log[-3000:]}") from exc


@pytest.fixture(scope="session")
def host_ca_bundle(tmp_path_factory) -> Path | None:
    """This site's own CA certificates (those added to the host's trust store) as one PEM file, or None.

    HTTPS from inside a build goes through this site's TLS-intercepting proxy: the stand-in bases do not
    trust it (no vendor image would), the builds do through the images' extra CA option, as a real
    site's builds would. Only the site's certificates: the public roots are in the images already.
    """
    parts = sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))
    text = "".join(p.read_text(errors="replace").strip() + "\n" for p in parts if p.is_file())
    if "BEGIN CERTIFICATE" not in text:
        return None
    bundle = tmp_path_factory.mktemp("ca") / "site-ca.pem"
    bundle.write_text(text)
    return bundle


STANDIN_PYPROJECT = """\
# Stand-in written by tests/infra/docker.py while the repository has no pyproject.toml of its own.
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "wavemlp-kit"
version = "{version}"
requires-python = ">=3.8"
dependencies = ["torch>=1.13", "torchvision", "timm>=0.9.16", "thop", "torchprofile", "click", "pyyaml", "jinja2"]

[project.scripts]
wmlp = "wavemlp.cli:main"

[tool.setuptools.packages.find]
include = ["wavemlp*"]
"""


@pytest.fixture(scope="session")
def kit_context(tmp_path_factory) -> Path:
    """The build context: the repository itself, or a copy of it with a stand-in pyproject.toml."""
    if (REPO / "pyproject.toml").is_file():
        return REPO
    context = tmp_path_factory.mktemp("context")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("wavemlp", "docker"):
        shutil.copytree(REPO / name, context / name, ignore=ignore)
    for name in (".dockerignore", "README.md", "LICENSE"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, context / name)
    from wavemlp.image.build import source_build_args

    version = source_build_args(REPO)["KIT_VERSION"]
    (context / "pyproject.toml").write_text(STANDIN_PYPROJECT.format(version=version))
    return context


def _tail(path: Path, chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
