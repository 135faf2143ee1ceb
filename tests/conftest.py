"""Test-wide settings: one CPU thread, headless rendering, and ROS traffic kept on this machine."""

import os

# Before anything can import rclpy or mujoco.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_LOG_DIR", "/tmp/lapa_ros_test_logs")
os.environ.setdefault("MUJOCO_GL", "egl")
# A domain per test process (pytest-xdist workers and parallel CI runs must not cross-talk).
os.environ["ROS_DOMAIN_ID"] = str(int(os.environ.get("LAPA_TEST_DOMAIN_BASE", "40")) + os.getpid() % 50)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a hard dependency
    pass


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: end-to-end runs (seconds to minutes); CI runs them too")
    config.addinivalue_line("markers", "ros: needs rclpy (skipped when ROS 2 is not importable)")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
