"""Container images of the kit: Dockerfiles live in docker/, this package builds them (host side).

``provision.py`` is not imported here: it runs inside the image, on the base image's own Python.
"""

from .build import (
    CA_BUILD_ARG,
    DEFAULT_BASES,
    DOCKERFILES,
    TARGETS,
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

__all__ = [
    "CA_BUILD_ARG",
    "DEFAULT_BASES",
    "DOCKERFILES",
    "TARGETS",
    "BaseInfo",
    "ImageBuildError",
    "build_env",
    "build_image",
    "default_tag",
    "docker_build_command",
    "format_command",
    "probe_base",
    "resolve",
]
