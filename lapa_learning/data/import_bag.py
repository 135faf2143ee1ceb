"""`lapa data import-bag`: rosbag2 recordings (MCAP or sqlite3) of teleop sessions -> an episode dataset.

    lapa data import-bag session1/ session2.mcap --out data/demos --fps 10 \\
        --image-topic /camera/image_raw --twist-topic /servo_node/delta_twist_cmds --linear-scale 0.1

Frames follow the same rules as the ROS recorder node (lapa_learning.data.sync): at `fps`, each frame takes
the newest image, twist and gripper command at or before its time (never a later one); frames whose inputs are
older than their max age are dropped and counted. A gap without frames longer than --split-gap starts a new
episode; by default each bag is one episode otherwise. Times are the bag's receive (log) times, as the recorder
node uses receive times; --header-stamps uses the messages' header stamps instead (a frame is then sampled only once
no later-logged message can be stamped at or before it, e.g. camera images logged after a transport latency).

Reads bags with the pure-Python `rosbags` library: no ROS installation is needed.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lapa_learning.data.sync import AsOfSampler, TwistActionMap, decode_compressed_image, decode_image
from lapa_learning.errors import ConfigError, DatasetError, InputError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
TWIST_TYPES = ("geometry_msgs/msg/TwistStamped", "geometry_msgs/msg/Twist")
GRIPPER_TYPES = ("std_msgs/msg/Float64", "std_msgs/msg/Float32")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", type=Path, help="rosbag2 folders (or .mcap / .db3 files)")
    parser.add_argument("--out", required=True, type=Path, help="episode dataset directory")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    mode.add_argument("--append", action="store_true", help="add episodes to an existing dataset at --out")
    parser.add_argument("--fps", type=float, default=10.0, help="frames per second sampled (default: 10)")
    parser.add_argument("--image-topic", default="/camera/image_raw", help="Image or CompressedImage topic")
    parser.add_argument("--twist-topic", default="/servo_node/delta_twist_cmds", help="TwistStamped teleop topic")
    parser.add_argument("--gripper-topic", default="/gripper/command",
                        help="Float64 gripper topic (optional in the bag; --gripper-default is used without it)")
    parser.add_argument("--instruction-topic", default="/instruction", help="String instruction topic")
    parser.add_argument("--instruction", default=None,
                        help="instruction for every episode (overrides the instruction topic)")
    parser.add_argument("--success", choices=("true", "false", "unknown"), default="unknown",
                        help="success flag stored with every episode (default: unknown)")
    parser.add_argument("--image-max-age", type=float, default=0.2, help="s (default: 0.2)")
    parser.add_argument("--twist-max-age", type=float, default=0.2, help="s (default: 0.2)")
    parser.add_argument("--gripper-max-age", type=float, default=0.0, help="s; 0 = the last command holds")
    parser.add_argument("--gripper-default", type=float, default=-1.0, help="gripper before any command (-1)")
    parser.add_argument("--split-gap", type=float, default=1.0,
                        help="s without frames that ends an episode (default: 1.0)")
    parser.add_argument("--min-frames", type=int, default=2, help="shorter episodes are skipped (default: 2)")
    parser.add_argument("--action-names", default="dx,dy,dz,gripper", help="dataset action order")
    parser.add_argument("--linear-scale", type=float, default=0.1,
                        help="m/s per dataset unit (the policy node's linear_scale; default: 0.1)")
    parser.add_argument("--angular-scale", type=float, default=0.5, help="rad/s per dataset unit (default: 0.5)")
    parser.add_argument("--action-limit", type=float, default=1.0, help="clip actions to +-this (0 = no clip)")
    parser.add_argument("--image-size", default=None, help="H,W to resize to (default: the camera's size)")
    parser.add_argument("--video-key", default="observation.images.front", help="dataset video feature name")
    parser.add_argument("--header-stamps", action="store_true",
                        help="time messages by their header stamps instead of the bag's receive times")


@dataclass
class ImportOptions:
    fps: float = 10.0
    image_topic: str = "/camera/image_raw"
    twist_topic: str = "/servo_node/delta_twist_cmds"
    gripper_topic: str = "/gripper/command"
    instruction_topic: str = "/instruction"
    instruction: str | None = None
    success: bool | None = None
    image_max_age: float = 0.2
    twist_max_age: float = 0.2
    gripper_max_age: float = 0.0
    gripper_default: float = -1.0
    split_gap: float = 1.0
    min_frames: int = 2
    mapping: TwistActionMap = field(default_factory=TwistActionMap)
    image_size: tuple[int, int] | None = None
    video_key: str = "observation.images.front"
    header_stamps: bool = False

    def __post_init__(self):
        for name in ("image_topic", "twist_topic", "gripper_topic", "instruction_topic"):
            topic = getattr(self, name)
            if topic and not topic.startswith("/"):
                setattr(self, name, "/" + topic)
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ConfigError(f"--fps must be a positive number, got {self.fps}")
        if not self.split_gap > 0:
            raise ConfigError(f"--split-gap must be > 0 seconds, got {self.split_gap}")
        for flag, age in (("--image-max-age", self.image_max_age), ("--twist-max-age", self.twist_max_age)):
            if not age > 0:
                raise ConfigError(f"{flag} must be a positive number of seconds, got {age}")
        if not self.gripper_max_age >= 0:
            raise ConfigError(f"--gripper-max-age must be >= 0 seconds (0 = the last command holds), "
                              f"got {self.gripper_max_age}")
        if not math.isfinite(self.gripper_default):
            raise ConfigError(f"--gripper-default must be a finite number, got {self.gripper_default}")
        if self.min_frames < 2:
            raise ConfigError(f"--min-frames must be at least 2 (an episode needs 2 frames), got {self.min_frames}")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.video_key):
            raise ConfigError(f"--video-key must be a name of letters, digits, '.', '_' and '-' (no path), e.g. "
                              f"observation.images.front; got {self.video_key!r}")


@dataclass
class BagEpisode:
    frames: list
    actions: list
    times: list
    instruction: str | None


def run(args: argparse.Namespace) -> int:
    try:
        names = tuple(n.strip() for n in args.action_names.split(",") if n.strip())
        mapping = TwistActionMap(names, args.linear_scale, args.angular_scale, args.action_limit)
    except ConfigError as err:
        raise ConfigError(f"--action-names/--linear-scale/--angular-scale: {err}") from err
    options = ImportOptions(
        fps=args.fps, image_topic=args.image_topic, twist_topic=args.twist_topic, gripper_topic=args.gripper_topic,
        instruction_topic=args.instruction_topic, instruction=args.instruction,
        success={"true": True, "false": False}.get(args.success), image_max_age=args.image_max_age,
        twist_max_age=args.twist_max_age, gripper_max_age=args.gripper_max_age,
        gripper_default=args.gripper_default, split_gap=args.split_gap, min_frames=args.min_frames,
        mapping=mapping, image_size=_parse_size(args.image_size), video_key=args.video_key,
        header_stamps=args.header_stamps)
    mode = "overwrite" if args.overwrite else "append" if args.append else "create"
    print(import_bags(args.bags, args.out, options, mode=mode))
    return 0


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--image-size must be H,W (e.g. 224,224), got {text!r}") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"--image-size must be positive, got {text!r}")
    return h, w


def import_bags(bags: list[Path], out: Path, options: ImportOptions, mode: str = "create") -> str:
    """Import every bag into the dataset at `out`; returns a summary. DatasetError on unreadable bags."""
    from lapa_learning.data.writer import EpisodeWriter

    missing = [str(b) for b in bags if not Path(b).exists()]
    if missing:
        raise DatasetError(f"bag(s) not found: {', '.join(missing)}")
    for bag in bags:  # every bag readable and with the topics before the writer touches --out (--overwrite)
        with _open_reader(Path(bag)) as reader:
            _wanted_topics(Path(bag), reader, options)
    writer = None
    lines, written = [], 0
    try:
        for bag in bags:
            episodes, dropped = read_bag_episodes(Path(bag), options)
            kept = 0
            for ep in episodes:
                if len(ep.frames) < options.min_frames:
                    continue
                instruction = options.instruction or ep.instruction
                if not instruction or not instruction.strip():
                    raise DatasetError(f"{bag}: no instruction for an episode of {len(ep.frames)} frames: nothing on "
                                       f"{options.instruction_topic} before or during it; pass --instruction 'what the "
                                       f"robot does' or --instruction-topic")
                frames = np.stack(ep.frames)
                if writer is None:
                    writer = EpisodeWriter(out, fps=options.fps, image_size=frames.shape[1:3],
                                           video_key=options.video_key, action_names=options.mapping.action_names,
                                           robot_type="rosbag", mode=mode, action_scales=options.mapping.scales())
                elif frames.shape[1:3] != writer.image_size:
                    (h, w), (wh, ww) = frames.shape[1:3], writer.image_size
                    raise DatasetError(f"{bag}: its images are {h}x{w} (HxW) but those imported before are "
                                       f"{wh}x{ww}; pass --image-size H,W to store every bag at one size")
                writer.add_episode(frames, instruction, actions=np.stack(ep.actions), success=options.success,
                                   timestamps=np.asarray(ep.times))
                kept += 1
                written += 1
            lines.append(f"{bag}: {kept} episode(s), {sum(len(e.frames) for e in episodes)} frames; "
                         f"frames dropped for stale or missing inputs: {dropped}")
    except BaseException:
        if writer is not None:
            writer.release()  # the episodes imported so far are safe; a rerun may write at once
        raise
    if writer is None:
        raise DatasetError("no episode was imported: every bag gave fewer than --min-frames frames "
                           "(check the topic names and the max ages)\n" + "\n".join(lines))
    writer.close()
    return "\n".join(lines + [f"wrote {written} episode(s) to {out}"])


@contextlib.contextmanager
def _open_reader(path: Path):
    """An open rosbags Reader of `path`: a rosbag2 folder (metadata.yaml and its storage files), a storage file of
    such a folder (the folder is read), or a lone .mcap / .db3 file without metadata.yaml (read on its own).
    DatasetError naming `path` for anything rosbags cannot open (missing or truncated metadata, a bad file)."""
    from rosbags.rosbag2 import Reader, ReaderError

    if path.is_dir():
        if not (path / "metadata.yaml").is_file():
            raise DatasetError(f"{path}: no metadata.yaml in this folder; a rosbag2 bag is a folder with metadata.yaml "
                               f"and its .mcap or .db3 files (`ros2 bag record -o NAME` writes one), or a lone .mcap "
                               f"or .db3 file")
        target = path
    elif (path.parent / "metadata.yaml").is_file():
        target = path.parent  # a file of a recorded bag folder: the folder, with all its split files
    elif path.suffix in (".mcap", ".db3"):
        target = path  # a lone storage file: rosbags reads it without metadata.yaml
    else:
        raise DatasetError(f"{path}: not a rosbag2 bag; a bag is a folder with metadata.yaml and .mcap or .db3 "
                           f"files (`ros2 bag record -o NAME` writes one), or a lone .mcap / .db3 file")
    try:
        reader = Reader(target)
        reader.open()
    except Exception as err:  # rosbags raises its own errors for missing or truncated metadata, bad storage, ...
        what = ("is its metadata.yaml complete? (a rosbag2 bag is a folder with metadata.yaml and its .mcap or .db3 "
                "files)" if target.is_dir() else "expected an MCAP or sqlite3 storage file")
        raise DatasetError(f"{path}: not a readable rosbag2 (MCAP or sqlite3) bag ({_one_line(err)}); {what}") from err
    try:
        yield reader
    except ReaderError as err:  # a storage file cut short, a corrupt chunk, ...
        raise DatasetError(f"{path}: cannot read the bag's messages ({_one_line(err)}); is the recording "
                           f"complete?") from err
    finally:
        reader.close()


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def read_bag_episodes(path: Path, options: ImportOptions) -> tuple[list[BagEpisode], dict[str, int]]:
    """Sample one bag into episodes (in memory: only the sampled frames are kept)."""
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_KILTED)
    gripper_age = options.gripper_max_age if options.gripper_max_age > 0 else math.inf
    episodes: list[BagEpisode] = []
    period = 1.0 / options.fps
    with _open_reader(path) as reader:
        wanted = _wanted_topics(path, reader, options)
        connections = [c for c in reader.connections if c.topic in wanted]

        def timed_messages():
            return _timed_messages(reader.messages(connections=connections), typestore, options.header_stamps)

        # Header stamps need not follow the log order (a camera's images are logged after its transport latency):
        # a first pass finds how much earlier than one logged before it a message is stamped, and frames are sampled
        # that far behind the newest stamp, so that every message stamped at or before a frame is in when it is sampled.
        lateness = _lateness(path, timed_messages()) if options.header_stamps else 0.0
        horizon = lateness + max(5.0, 2 * max(options.image_max_age, options.twist_max_age,
                                              gripper_age if math.isfinite(gripper_age) else 0.0))
        sampler = AsOfSampler(("image", "twist", "gripper"), defaults={"gripper": options.gripper_default},
                              max_age={"image": options.image_max_age, "twist": options.twist_max_age,
                                       "gripper": gripper_age}, horizon=horizon)
        instructions = AsOfSampler(("instruction",), max_age=math.inf, horizon=horizon)
        state = {"next_t": None, "start": 0.0, "k": 0, "episode": None, "last_frame_t": -math.inf}

        def sample_until(t: float, inclusive: bool) -> None:
            """Sample every frame time before t (or up to t): all messages up to then have been read."""
            while state["next_t"] is not None and (state["next_t"] < t or (inclusive and state["next_t"] <= t)):
                ts = state["next_t"]
                frame = sampler.sample(ts)
                if frame is not None:
                    if state["episode"] is None or ts - state["last_frame_t"] > options.split_gap:
                        hit = instructions.sample(ts)
                        state["episode"] = BagEpisode([], [], [], None if hit is None else hit["instruction"])
                        episodes.append(state["episode"])
                    _append_frame(path, state["episode"], ts, frame, options)
                    state["last_frame_t"] = ts
                state["k"] += 1
                state["next_t"] = state["start"] + state["k"] * period  # no accumulated rounding

        def add(stream: str, t: float, msgtype: str, msg) -> None:
            if stream == "instruction":
                instructions.add("instruction", t, str(msg.data))
                episode = state["episode"]  # an episode that began before any instruction takes its first one
                if episode is not None and episode.instruction is None and t - state["last_frame_t"] <= options.split_gap:
                    episode.instruction = str(msg.data)
                return
            sampler.add(stream, t, (msgtype, msg))
            if state["next_t"] is None and stream == "image":
                state["next_t"] = state["start"] = t  # frames start at the first image

        newest = -math.inf
        for topic, t, msgtype, msg in timed_messages():
            stream = wanted[topic]
            if stream in ("twist", "gripper"):
                values = sum(_twist_values(msgtype, msg), ()) if stream == "twist" else (msg.data,)
                if not all(math.isfinite(v) for v in values):
                    raise DatasetError(f"{path}: the message on {topic} at t={t:.3f} s holds NaN or infinity; "
                                       f"expected finite numbers")
            newest = max(newest, t)
            sample_until(newest - lateness, inclusive=False)
            add(stream, t, msgtype, msg)
        sample_until(newest, inclusive=True)
    return episodes, dict(sampler.dropped)


def _timed_messages(messages, typestore, header_stamps: bool):
    """(topic, t, msgtype, message) of rosbags `messages`, in log order; t is the log time or the header stamp."""
    # With --header-stamps, a message without a header (String, Float64, Twist) is moved onto the header clock
    # by the newest (log time - header stamp) offset: a robot on sim time stamps headers from 0 while the bag
    # logs wall time, and mixing the two clocks would pair nothing (or sample billions of empty frames).
    offset, pending = None, []  # headerless messages before the first header: placed once the offset is known
    for conn, log_ns, raw in messages:
        msg = typestore.deserialize_cdr(raw, conn.msgtype)
        t = log_ns * 1e-9
        if header_stamps:
            if hasattr(msg, "header"):
                stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                offset, t = t - stamp, stamp
                yield from ((p_topic, p_log - offset, p_type, p_msg) for p_topic, p_log, p_type, p_msg in pending)
                pending.clear()
            elif offset is None:
                pending.append((conn.topic, t, conn.msgtype, msg))
                continue
            else:
                t -= offset
        yield conn.topic, t, conn.msgtype, msg


MAX_LATENESS = 5.0  # s: header stamps further out of log order hold that much of the bag in memory; refused


def _lateness(path: Path, messages) -> float:
    """How much earlier than the newest stamp logged before it any of the (topic, t, ...) `messages` is stamped."""
    newest, lateness = -math.inf, 0.0
    for topic, t, *_ in messages:
        if newest - t > MAX_LATENESS:
            raise DatasetError(f"{path}: with --header-stamps, the message on {topic} stamped t={t:.3f} s was "
                               f"logged after one stamped {newest - t:.1f} s later (at most {MAX_LATENESS:.0f} s "
                               f"expected): are all topics stamped on one clock? Import without --header-stamps")
        lateness, newest = max(lateness, newest - t), max(newest, t)
    return lateness


def _wanted_topics(path: Path, reader, options: ImportOptions) -> dict[str, str]:
    """topic -> stream name of the bag's topics to read; DatasetError naming `path` when a needed one is missing."""
    topics = {c.topic: c.msgtype for c in reader.connections}
    _check_topic(path, topics, options.image_topic, IMAGE_TYPES, required=True)
    _check_topic(path, topics, options.twist_topic, TWIST_TYPES, required=True)
    wanted = {options.image_topic: "image", options.twist_topic: "twist", options.instruction_topic: "instruction"}
    if _check_topic(path, topics, options.gripper_topic, GRIPPER_TYPES, required=False):
        wanted[options.gripper_topic] = "gripper"
    return wanted


def _check_topic(path: Path, topics: dict, topic: str, types: tuple[str, ...], required: bool) -> bool:
    if topic not in topics:
        if required:
            listing = ", ".join(f"{k} ({v})" for k, v in sorted(topics.items())) or "none"
            raise DatasetError(f"{path}: topic {topic} is not in the bag; it has: {listing}")
        return False
    if topics[topic] not in types:
        raise DatasetError(f"{path}: topic {topic} has type {topics[topic]}; expected one of {', '.join(types)}")
    return True


def _twist_values(msgtype: str, msg) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(linear, angular) of a Twist or TwistStamped."""
    twist = msg.twist if msgtype.endswith("TwistStamped") else msg
    return (twist.linear.x, twist.linear.y, twist.linear.z), (twist.angular.x, twist.angular.y, twist.angular.z)


def _append_frame(path: Path, episode: BagEpisode, t: float, frame: dict, options: ImportOptions) -> None:
    import cv2

    msgtype, image_msg = frame["image"]
    try:
        if msgtype.endswith("CompressedImage"):
            rgb = decode_compressed_image(image_msg.format, image_msg.data)
        else:
            rgb = decode_image(image_msg.height, image_msg.width, image_msg.encoding, image_msg.step, image_msg.data)
    except InputError as err:
        raise DatasetError(f"{path}: image on {options.image_topic} at t={t:.3f} s: {err}") from err
    size = options.image_size or (episode.frames[0].shape[:2] if episode.frames else None)
    if size is not None and rgb.shape[:2] != tuple(size):
        rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    linear, angular = _twist_values(*frame["twist"])
    gripper = frame["gripper"]
    gripper = float(gripper[1].data) if isinstance(gripper, tuple) else float(gripper)
    episode.frames.append(rgb)
    episode.actions.append(options.mapping.to_action(linear, angular, gripper))
    episode.times.append(t)
