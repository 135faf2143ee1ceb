"""Record teleop demonstrations into an episode dataset (for `lapa vla finetune`).

    ros2 launch lapa_ros record.launch.py dataset:=/data/demos                 # a real arm + teleop device
    ros2 launch lapa_ros record.launch.py dataset:=/data/demos sim:=true episodes:=20   # scripted expert in sim

Then, per episode (sim:=true with episodes:=N does this for you with episode_runner):
    ros2 service call /recorder_node/start std_srvs/srv/Trigger
    ros2 service call /recorder_node/stop std_srvs/srv/SetBool "{data: true}"     # data = success
    ros2 service call /recorder_node/discard std_srvs/srv/Trigger
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, SetEnvironmentVariable
from launch.conditions import IfCondition, UnlessCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    config = PathJoinSubstitution([FindPackageShare("lapa_ros"), "config"])
    record_yaml = PathJoinSubstitution([config, "record.yaml"])
    sim_yaml = PathJoinSubstitution([config, "sim.yaml"])
    sim = LaunchConfiguration("sim")
    overrides = {
        "dataset_root": LaunchConfiguration("dataset"),
        "fps": LaunchConfiguration("fps"),
        "image_topic": LaunchConfiguration("image_topic"),
        "image_transport": LaunchConfiguration("image_transport"),
        "twist_topic": LaunchConfiguration("twist_topic"),
    }
    run_episodes = PythonExpression(["'", sim, "' == 'true' and int('", LaunchConfiguration("episodes"), "') > 0"])
    return LaunchDescription([
        DeclareLaunchArgument("dataset", description="episode dataset folder (created, or appended to)"),
        DeclareLaunchArgument("fps", default_value="10.0", description="frames per second stored"),
        DeclareLaunchArgument("image_topic", default_value="camera/image_raw", description="camera topic"),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage, JPEG/PNG; "
                                          "e.g. image_topic:=camera/image_raw/compressed)"),
        DeclareLaunchArgument("twist_topic", default_value="servo_node/delta_twist_cmds",
                              description="geometry_msgs/TwistStamped teleop command topic"),
        DeclareLaunchArgument("sim", default_value="false",
                              description="record the scripted expert in sim_node (with expert_teleop)"),
        DeclareLaunchArgument("episodes", default_value="0",
                              description="with sim:=true: run this many episodes with episode_runner"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="run on /clock (Gazebo); sim:=true sets it by itself"),
        SetEnvironmentVariable("FASTDDS_DEFAULT_PROFILES_FILE",
                               PathJoinSubstitution([config, "fastdds_large_images.xml"])),
        Node(package="lapa_ros", executable="recorder_node", name="recorder_node", output="screen",
             parameters=[record_yaml, overrides, {"use_sim_time": LaunchConfiguration("use_sim_time")}],
             condition=UnlessCondition(sim)),
        Node(package="lapa_ros", executable="recorder_node", name="recorder_node", output="screen",
             parameters=[record_yaml, sim_yaml, overrides], condition=IfCondition(sim)),
        Node(package="lapa_ros", executable="sim_node", name="sim_node", output="screen",
             parameters=[sim_yaml, {"reset_on_start": False}], condition=IfCondition(sim)),
        Node(package="lapa_ros", executable="expert_teleop", name="expert_teleop", output="screen",
             parameters=[sim_yaml], condition=IfCondition(sim)),
        Node(package="lapa_ros", executable="episode_runner", name="episode_runner", output="screen",
             parameters=[{"episodes": LaunchConfiguration("episodes"), "record": True, "use_sim_time": True}],
             condition=IfCondition(run_episodes)),
    ])
