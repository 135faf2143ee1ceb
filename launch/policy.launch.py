"""LAPA policy node, optionally with the simulated arm.

    ros2 launch lapa_ros policy.launch.py checkpoint:=/path/to/checkpoint
    ros2 launch lapa_ros policy.launch.py checkpoint:=/path/to/checkpoint sim:=true    # + sim_node, sim time

The node starts disabled on a real arm (config/policy.yaml); enable it with
    ros2 service call /policy_node/enable std_srvs/srv/SetBool "{data: true}"
With sim:=true, config/sim.yaml is layered on top (sim scaling, use_sim_time, enabled).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("lapa_ros"), "config"])
    policy_yaml = PathJoinSubstitution([config, "policy.yaml"])
    sim_yaml = PathJoinSubstitution([config, "sim.yaml"])
    overrides = {
        "checkpoint": LaunchConfiguration("checkpoint"),
        "device": LaunchConfiguration("device"),
        "image_topic": LaunchConfiguration("image_topic"),
        "image_transport": LaunchConfiguration("image_transport"),
        "instruction_topic": LaunchConfiguration("instruction_topic"),
    }
    sim = LaunchConfiguration("sim")
    return LaunchDescription([
        DeclareLaunchArgument("checkpoint", description="finetuned LAPA checkpoint directory"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda, cuda:N"),
        DeclareLaunchArgument("image_topic", default_value="camera/image_raw",
                              description="sensor_msgs/Image camera topic"),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage, JPEG/PNG; "
                                          "e.g. image_topic:=camera/image_raw/compressed)"),
        DeclareLaunchArgument("instruction_topic", default_value="instruction",
                              description="std_msgs/String instruction topic (transient local)"),
        DeclareLaunchArgument("sim", default_value="false", description="also start sim_node (Meta-World)"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="run on /clock (Gazebo); sim:=true sets it by itself"),
        DeclareLaunchArgument("large_images", default_value="true",
                              description="use the Fast DDS profile with a 32 MB shared-memory segment"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               PathJoinSubstitution([config, "fastdds_large_images.xml"]),
                               condition=IfCondition(LaunchConfiguration("large_images"))),
        Node(package="lapa_ros", executable="policy_node", name="policy_node", output="screen",
             parameters=[policy_yaml, overrides, {"use_sim_time": LaunchConfiguration("use_sim_time")}],
             condition=UnlessCondition(sim)),
        Node(package="lapa_ros", executable="policy_node", name="policy_node", output="screen",
             parameters=[policy_yaml, sim_yaml, overrides], condition=IfCondition(sim)),
        Node(package="lapa_ros", executable="sim_node", name="sim_node", output="screen",
             parameters=[sim_yaml], condition=IfCondition(sim)),
    ])
