"""The compiled pipeline package: the KFP IR YAML a user uploads, pointed at the images it should run in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from musicrec.errors import RunError

COMPILED_PIPELINE = Path(__file__).with_name("music_recommender.yaml")


def step_images(image: str | None = None, gpu_image: str | None = None) -> dict[str, str]:
    """Which image replaces each of the components' default images (``components.BASE_IMAGE``, ``GPU_IMAGE``).

    Args:
        image: the image every CPU step runs in: a tag (``<account>.dkr.ecr.<region>.amazonaws.com/musicrec:1``)
            or a digest (``…/musicrec@sha256:…``); default ``components.BASE_IMAGE``.
        gpu_image: the image of the three training steps; by default ``image`` with ``-gpu`` appended to its tag
            (how ``make images`` tags the GPU variant), which a digest cannot have, so a digest needs it given.

    Raises:
        RunError: an empty or blank reference, or a digest ``image`` without ``gpu_image``.
    """
    from components import BASE_IMAGE, GPU_IMAGE

    for name, reference in (("--image", image), ("--gpu-image", gpu_image)):
        if reference is not None and (not reference or any(c.isspace() for c in reference)):
            raise RunError(f"{name} {reference!r}: expected an image reference such as repo/musicrec:0.1.0")
    if gpu_image is None:
        if image is not None and "@" in image:
            raise RunError(f"--image {image} is a digest: give the training steps' image with --gpu-image")
        gpu_image = f"{image}-gpu" if image is not None else GPU_IMAGE
    return {BASE_IMAGE: image or BASE_IMAGE, GPU_IMAGE: gpu_image}


def _point_at(pipeline_spec: dict[str, Any], images: dict[str, str]) -> None:
    for executor in pipeline_spec["deploymentSpec"]["executors"].values():
        container = executor.get("container")
        if container is not None:
            container["image"] = images.get(container["image"], container["image"])


def compile_pipeline(
    out: str | Path = COMPILED_PIPELINE, image: str | None = None, gpu_image: str | None = None
) -> Path:
    """Compile the DAG to the KFP IR YAML a user uploads in the Kubeflow UI.

    Args:
        out: the YAML file to write.
        image: the CPU steps' image (see :func:`step_images`); default ``components.BASE_IMAGE``.
        gpu_image: the training steps' image (see :func:`step_images`).

    Returns:
        ``out``.
    """
    from kfp import compiler

    from pipelines.music_recommender import music_recommender

    images = step_images(image, gpu_image)
    out = Path(out)
    compiler.Compiler().compile(music_recommender, package_path=str(out))
    if any(old != new for old, new in images.items()):
        # The images are set in the parsed IR (executors' container specs), never by text replacement: a digest
        # or a registry host with a port stays intact. The platform spec (second document) is kept as it is.
        text = out.read_text()
        header = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
        documents = list(yaml.safe_load_all(text))
        _point_at(documents[0], images)
        out.write_text(header + yaml.safe_dump_all(documents, sort_keys=False))
    return out
