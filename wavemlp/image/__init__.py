"""Container images of the kit: Dockerfiles live in docker/, this package builds them (host side).

Login-node side: may import ``recipe``, ``vendors``, ``resources`` and the docker SDK (inside the functions
that talk to the engine); never torch, timm or torchvision.

``provision.py`` is not imported here: it runs inside the image, on the base image's own Python.
"""

from .build import (
    CA_BUILD_ARG,
    DEFAULT_BASES,
    DOCKERFILES,
    BaseInfo,
    ImageBuildError,
    build_env,
    build_image,
    default_tag,
    docker_build_command,
    format_command,
    probe_base,
    resolve,
)
from .targets import check_target, image_settings, image_targets

__all__ = [
    "CA_BUILD_ARG",
    "DEFAULT_BASES",
    "DOCKERFILES",
    "BaseInfo",
    "ImageBuildError",
    "build_env",
    "build_image",
    "check_target",
    "default_tag",
    "docker_build_command",
    "format_command",
    "image_settings",
    "image_targets",
    "probe_base",
    "resolve",
]
