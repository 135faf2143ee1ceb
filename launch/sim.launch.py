"""The simulated arm alone (Meta-World behind ROS topics), optionally driven by the scripted expert.

    ros2 launch lapa_ros sim.launch.py tasks:="[push-v3, pick-place-v3]" teleop:=true
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("lapa_ros"), "config"])
    sim_yaml = PathJoinSubstitution([config, "sim.yaml"])
    overrides = {
        "tasks": LaunchConfiguration("tasks"),
        "image_size": LaunchConfiguration("image_size"),
        "step_rate": LaunchConfiguration("step_rate"),
    }
    return LaunchDescription([
        DeclareLaunchArgument("tasks", default_value="[push-v3]", description="Meta-World tasks (YAML list)"),
        DeclareLaunchArgument("image_size", default_value="64", description="camera image size in pixels"),
        DeclareLaunchArgument("step_rate", default_value="40.0", description="simulation steps per wall second"),
        DeclareLaunchArgument("teleop", default_value="false", description="drive the arm with the scripted expert"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               PathJoinSubstitution([config, "fastdds_large_images.xml"])),
        Node(package="lapa_ros", executable="sim_node", name="sim_node", output="screen",
             parameters=[sim_yaml, overrides]),
        Node(package="lapa_ros", executable="expert_teleop", name="expert_teleop", output="screen",
             parameters=[sim_yaml], condition=IfCondition(LaunchConfiguration("teleop"))),
    ])
