"""lapa_ros: ROS 2 nodes around the LAPA policy (policy_node, recorder_node, sim_node, expert_teleop).

The nodes are thin: ROS messages in, plain numpy and `lapa_learning` calls inside, ROS messages out. The pure
logic lives in converters.py, safety.py, recording.py and lapa_learning.data.sync, tested without ROS.
"""
