"""Runs inside the image being built, on the base image's own Python: keeps the vendor torch untouched.

Standard library only (plus pip's vendored ``packaging``), Python 3.8+, because it runs before anything
is installed and on whatever Python the vendor SDK ships. Subcommands:

- ``probe``: print what the base holds (torch, torchvision, CUDA / CoreX SDK version) as JSON.
- ``record OUT``: same, written to OUT, failing loudly when the base has no importable torch.
- ``pip ARGS...``: run ``python -m pip ARGS`` with the build-time extra CA certificates (if any) in a
  temporary bundle that is deleted afterwards, so the certificates never land in a layer.
- ``verify RECORD LOCK``: after the install, check that torch and torchvision are still the base's (same
  version, same files), that every pin of LOCK is what Python now imports, and that no requirement of
  the installed packages (nor of torch/torchvision) is broken.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Any, Dict, List, Optional

# The packages the base image (the vendor's build) provides and the image must never replace.
VENDOR = ("torch", "torchvision")
CA_ENV = "EXTRA_CA_CERTS"
# Starts the probe's line: a vendor image may print banners or warnings on the same stdout.
PROBE_MARK = "WAVEMLP-PROBE "


class ProvisionError(Exception):
    pass


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _packaging():
    # pip is needed anyway (it installs the packages); its vendored copy spares a dependency on the base.
    try:
        from packaging.requirements import Requirement
        from packaging.version import InvalidVersion, Version
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
        from pip._vendor.packaging.version import InvalidVersion, Version
    return Requirement, Version, InvalidVersion


def installed() -> Dict[str, Any]:
    """Normalized name -> the distribution Python imports first (sys.path order, so venv before base)."""
    from importlib import metadata

    found: Dict[str, Any] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and normalize(name) not in found:
            found[normalize(name)] = dist
    return found


def _module_info(module: str) -> Optional[Dict[str, str]]:
    try:
        mod = __import__(module)
    except Exception as exc:  # noqa: BLE001 - a broken vendor build raises anything, OSError to RuntimeError
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"version": str(getattr(mod, "__version__", "")), "file": os.path.realpath(mod.__file__)}


def sdk_version(torch_version: str) -> Optional[str]:
    """'2.4.1+corex.4.2.0' -> '4.2.0': the CoreX SDK names itself in torch's local version."""
    match = re.search(r"\+corex[._-]?([0-9][0-9.]*[0-9])", torch_version)
    return match.group(1) if match else None


def probe() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "python": sys.executable,
        "python_version": "{}.{}.{}".format(*sys.version_info[:3]),
        "torch": _module_info("torch"),
        "torchvision": None,
        "cuda": None,
        "corex_sdk": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torchvision"] = _module_info("torchvision")
        info["cuda"] = getattr(getattr(torch, "version", None), "cuda", None)
        info["corex_sdk"] = sdk_version(info["torch"]["version"])
    return info


def require_torch(info: Dict[str, Any], where: str) -> None:
    torch = info["torch"]
    if "error" in torch:
        raise ProvisionError(
            "{} holds no importable torch ({}; python: {}). The image must be built on the vendor's PyTorch "
            "image (NGC PyTorch for CUDA, the CoreX SDK image for Iluvatar): torch is never installed from "
            "PyPI.".format(where, torch["error"], info["python"])
        )


def _satisfied(spec, version: str, vendor_build: bool) -> bool:
    _, Version, InvalidVersion = _packaging()
    if spec.contains(version, prereleases=True):
        return True
    if not vendor_build:
        return False
    # Vendor builds carry pre-release or local tags (Debian's '1.13.0a0+gitunknown', NGC's '2.4.0a0+...nv24.5'):
    # their release number is what they really are.
    try:
        return spec.contains(Version(version).base_version, prereleases=True)
    except InvalidVersion:
        return False


def broken_requirements(names: List[str], dists: Dict[str, Any], venv: str) -> List[str]:
    """The unmet requirements of the distributions ``names`` (markers evaluated for this Python).

    ``venv`` is the prefix of what the build installed; anything elsewhere is the base's (vendor) build.
    """
    Requirement, _, _ = _packaging()
    problems = []
    for name in names:
        dist = dists.get(normalize(name))
        if dist is None:
            continue
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            provider = dists.get(normalize(req.name))
            if provider is None:
                problems.append(f"{name} {dist.version} requires {line}, which is not installed")
                continue
            in_base = not _location(provider).startswith(venv)
            if not _satisfied(req.specifier, provider.version, vendor_build=in_base):
                problems.append(
                    f"{name} {dist.version} requires {line}, but {req.name} {provider.version} is installed"
                )
    return problems


def same_version(a: str, b: str) -> bool:
    """PEP 440 equality: thop's metadata says 0.1.1-2209072238 for the release pinned as 0.1.1.post2209072238."""
    _, Version, InvalidVersion = _packaging()
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _location(dist) -> str:
    return os.path.realpath(str(dist.locate_file("")))


def record(out: str, expect_torch: str) -> Dict[str, Any]:
    info = probe()
    require_torch(info, "the base image")
    if expect_torch and info["torch"]["version"] != expect_torch:
        raise ProvisionError(
            "the base image's torch is {} but the build was told {} (build arg TORCH_VERSION): the label would "
            "lie; rebuild without that argument or with the right one".format(info["torch"]["version"], expect_torch)
        )
    # What holds in the base before anything is added: only requirements broken by the install count later.
    info["vendor_problems"] = broken_requirements(list(VENDOR), installed(), venv="\0")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)
    return info


def read_lock(path: str) -> Dict[str, str]:
    pins = {}
    with open(path) as f:
        for raw in f:
            line = raw.split("#", 1)[0].strip()
            if not line or line.startswith("-"):
                continue
            name, sep, version = line.partition("==")
            if not sep:
                raise ProvisionError(f"{path}: {line!r} is not pinned with ==")
            pins[normalize(name.strip())] = version.split(";")[0].strip()
    clash = sorted(set(pins) & set(VENDOR))
    if clash:
        raise ProvisionError(f"{path} pins {clash}: those come from the base image and are never installed")
    return pins


def verify(record_path: str, lock_path: str, imports: List[str]) -> List[str]:
    with open(record_path) as f:
        base = json.load(f)
    now = probe()
    require_torch(now, "the built image")
    problems = []
    for module in VENDOR:
        before, after = base.get(module) or {}, now.get(module) or {}
        if before != after:
            problems.append(f"{module} changed: base had {before}, the image now imports {after}")
    dists = installed()
    venv = os.path.realpath(sys.prefix)
    for name, version in read_lock(lock_path).items():
        dist = dists.get(name)
        if dist is None:
            problems.append(f"{name}=={version} is pinned but not installed")
        elif not same_version(dist.version, version):
            problems.append(
                f"{name}=={version} is pinned but Python imports {name} {dist.version} from {_location(dist)}"
            )
    ours = [n for n, d in dists.items() if _location(d).startswith(venv + os.sep)]
    problems += broken_requirements(sorted(ours), dists, venv + os.sep)
    old = set(base.get("vendor_problems", []))
    problems += [p for p in broken_requirements(list(VENDOR), dists, venv + os.sep) if p not in old]
    for module in imports:
        try:
            __import__(module)
        except Exception as exc:  # noqa: BLE001 - any failure to import is the finding
            problems.append(f"import {module} failed: {type(exc).__name__}: {exc}")
    return problems


def pip(args: List[str]) -> int:
    """python -m pip ARGS, trusting the extra CA certificates of the build arg for this call only."""
    env = dict(os.environ)
    extra = env.pop(CA_ENV, "").strip()
    bundle = None
    try:
        if extra:
            if "BEGIN CERTIFICATE" not in extra:
                raise ProvisionError(f"build arg {CA_ENV} holds no PEM certificate")
            from pip._vendor import certifi

            # A bundle replaces pip's default trust store: keep the public roots and add the site's.
            with open(certifi.where()) as f:
                roots = f.read()
            fd, bundle = tempfile.mkstemp(suffix=".pem")
            with os.fdopen(fd, "w") as f:
                f.write(roots.rstrip("\n") + "\n" + extra + "\n")
            env["PIP_CERT"] = env["REQUESTS_CA_BUNDLE"] = env["SSL_CERT_FILE"] = bundle
        return subprocess.call([sys.executable, "-m", "pip"] + args, env=env)
    finally:
        if bundle:
            os.unlink(bundle)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="provision.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("probe")
    sub.add_parser("pip", help="python -m pip ARGS... with the build's extra CA certificates")
    p_record = sub.add_parser("record")
    p_record.add_argument("out")
    p_record.add_argument("--expect-torch", default="")
    p_verify = sub.add_parser("verify")
    p_verify.add_argument("record")
    p_verify.add_argument("lock")
    p_verify.add_argument("--import", dest="imports", action="append", default=[])
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pip"]:
        # Passed through untouched: argparse would take pip's own options for ours.
        try:
            return pip(argv[1:])
        except ProvisionError as exc:
            print(f"wavemlp image error: {exc}", file=sys.stderr)
            return 2
    ns = parser.parse_args(argv)
    try:
        if ns.cmd == "probe":
            print(PROBE_MARK + json.dumps(probe(), sort_keys=True))
        elif ns.cmd == "record":
            info = record(ns.out, ns.expect_torch)
            print("wavemlp: base torch {} at {}".format(info["torch"]["version"], info["torch"]["file"]))
        else:
            problems = verify(ns.record, ns.lock, ns.imports)
            if problems:
                # One line: the builder's caller shows the error line, not the whole log.
                raise ProvisionError("the image is not consistent: " + "; ".join(problems))
            print("wavemlp: torch untouched, pins held, requirements met")
    except ProvisionError as exc:
        print(f"wavemlp image error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
