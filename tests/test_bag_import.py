"""`lapa data import-bag` on bags written here with `rosbags` (MCAP and sqlite3), no ROS needed."""

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="import-bag reads bags with the `rosbags` package")

from rosbags.rosbag2 import StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from lapa_learning.cli import main as lapa  # noqa: E402
from lapa_learning.data import EpisodeDataset  # noqa: E402
from lapa_learning.data.import_bag import ImportOptions, import_bags, read_bag_episodes  # noqa: E402
from lapa_learning.data.sync import TwistActionMap  # noqa: E402
from lapa_learning.errors import DatasetError  # noqa: E402

TS = get_typestore(Stores.ROS2_KILTED)
T = TS.types
NS = 1_000_000_000


def _header(t):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=int(t), nanosec=int(t % 1 * 1e9)),
                                    frame_id="cam")


def _image(t, value, encoding="rgb8", size=(12, 16)):
    h, w = size
    rgb = np.full((h, w, 3), value, np.uint8)
    rgb[..., 1] = 7  # G marks the channel order
    px = rgb if encoding == "rgb8" else rgb[..., ::-1]
    return T["sensor_msgs/msg/Image"](header=_header(t), height=h, width=w, encoding=encoding, is_bigendian=0,
                                      step=w * 3, data=np.ascontiguousarray(px).reshape(-1))


def _twist(t, vx):
    V = T["geometry_msgs/msg/Vector3"]
    return T["geometry_msgs/msg/TwistStamped"](
        header=_header(t), twist=T["geometry_msgs/msg/Twist"](linear=V(x=vx, y=0.0, z=-0.05), angular=V(x=0.0, y=0.0, z=0.0)))


def write_bag(path, storage, image_times, twist_times, gripper=((0.0, -1.0), (1.0, 1.0)), instruction="stack the cups",
              encoding="rgb8", log_start=100.0, instruction_time=0.0, size=(12, 16), image_latency=0.0,
              image_value=lambda t: int(10 * t) % 250, twist_x=lambda t: t / 100.0):
    """Images with value int(10 * t) % 250, twists with linear.x = t / 100 (so each action tells its twist's time).
    Headers are stamped t; the bag logs each message at log_start + t (images at log_start + t + image_latency)."""
    with Writer(path, version=9, storage_plugin=storage) as w:
        conns = {
            "image": w.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TS),
            "twist": w.add_connection("/servo_node/delta_twist_cmds", "geometry_msgs/msg/TwistStamped", typestore=TS),
            "gripper": w.add_connection("/gripper/command", "std_msgs/msg/Float64", typestore=TS),
            "instruction": w.add_connection("/instruction", "std_msgs/msg/String", typestore=TS),
        }
        events = [(t + image_latency, "image", _image(t, image_value(t), encoding, size)) for t in image_times]
        events += [(t, "twist", _twist(t, twist_x(t))) for t in twist_times]
        events += [(t, "gripper", T["std_msgs/msg/Float64"](data=g)) for t, g in gripper]
        if instruction is not None:
            events.append((instruction_time, "instruction", T["std_msgs/msg/String"](data=instruction)))
        for t, kind, msg in sorted(events, key=lambda e: e[0]):  # t: the log time (- log_start)
            ns = int(round((log_start + t) * NS))  # bag times start at log_start (default 100 s)
            w.write(conns[kind], ns, TS.serialize_cdr(msg, msg.__msgtype__))
    return path


OPTS = dict(fps=10.0, mapping=TwistActionMap(linear_scale=0.1), split_gap=0.5)


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3], ids=["mcap", "sqlite3"])
def test_import_follows_the_as_of_rules_and_splits_on_gaps(tmp_path, storage):
    images = [i / 30 for i in range(60)] + [3.0 + i / 30 for i in range(30)]  # 0..2 s, a 1 s gap, 3..4 s
    twists = [0.025 + i / 20 for i in range(80)]  # 20 Hz, first one at 0.025 s, off the 0.1 s frame grid
    bag = write_bag(tmp_path / "bag", storage, images, twists)
    summary = import_bags([bag], tmp_path / "ds", ImportOptions(**OPTS))
    assert "2 episode(s)" in summary
    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.num_episodes == 2 and ds.fps == 10.0 and ds.action_names == ("dx", "dy", "dz", "gripper")
    assert ds.episodes[0].instruction == "stack the cups" and ds.image_size == (12, 16)
    for ep in range(2):
        actions = ds.actions(ep)
        t0 = 100.0 + (0.1 if ep == 0 else 3.0)  # frame at 0.0 has no twist yet: dropped
        for k, action in enumerate(actions):
            t = t0 + k * 0.1 - 100.0
            twist_t = max(tt for tt in twists if tt <= t + 1e-9)  # as of t, never later
            assert action[0] == pytest.approx(twist_t / 100.0 / 0.1, abs=1e-4), (ep, k)
            assert action[2] == pytest.approx(-0.5)
            assert action[3] == (1.0 if t >= 1.0 else -1.0)  # gripper holds its last command
        frames = ds.frames(ep)
        assert np.abs(frames[..., 1].astype(int) - 7).max() <= 3  # G stayed G (video is lossy)
    assert len(ds.actions(0)) == 21  # 0.1 .. 2.1 s: the last image (1.967 s) is fresh for 0.2 s


def test_header_stamps_on_sim_time_next_to_wall_clock_log_times(tmp_path):
    """A robot on sim time stamps headers from 0 while the bag logs wall time: --header-stamps moves the headerless
    instruction and gripper messages onto the header clock, and gives the frames the log-time import gives."""
    images, twists = [i / 30 for i in range(60)], [0.025 + i / 20 for i in range(40)]
    plain = import_bags([write_bag(tmp_path / "a", StoragePlugin.MCAP, images, twists)], tmp_path / "ds_a",
                        ImportOptions(**OPTS))
    bag = write_bag(tmp_path / "b", StoragePlugin.MCAP, images, twists, log_start=1000.0)
    stamped = import_bags([bag], tmp_path / "ds_b", ImportOptions(**OPTS, header_stamps=True))
    assert "1 episode(s)" in plain and "1 episode(s)" in stamped
    a, b = EpisodeDataset(tmp_path / "ds_a"), EpisodeDataset(tmp_path / "ds_b")
    assert b.episodes[0].instruction == "stack the cups"
    np.testing.assert_array_equal(a.actions(0), b.actions(0))  # gripper -1 then +1 at 1 s, as in the plain import


def test_an_instruction_published_after_the_first_frame_names_its_episode(tmp_path):
    images, twists = [i / 30 for i in range(60)], [0.025 + i / 20 for i in range(40)]
    bag = write_bag(tmp_path / "bag", StoragePlugin.SQLITE3, images, twists, instruction_time=0.5)
    assert "1 episode(s)" in import_bags([bag], tmp_path / "ds", ImportOptions(**OPTS))
    assert EpisodeDataset(tmp_path / "ds").episodes[0].instruction == "stack the cups"
    # a gripper max age longer than the default history (5 s) is honoured, not refused
    assert "1 episode(s)" in import_bags([bag], tmp_path / "ds2", ImportOptions(**OPTS, gripper_max_age=10.0))


def test_bgr_images_stale_twists_and_cli(tmp_path):
    images = [i / 30 for i in range(60)]
    twists = [i / 20 for i in range(10)] + [1.5 + i / 20 for i in range(10)]  # no twist from 0.45 to 1.5 s
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP, images, twists, encoding="bgr8", instruction=None)
    out = tmp_path / "ds"
    code = lapa(["data", "import-bag", str(bag), "--out", str(out), "--fps", "10", "--linear-scale", "0.1",
                 "--instruction", "wipe the table", "--split-gap", "5", "--success", "true", "--image-size", "8,8"])
    assert code == 0
    ds = EpisodeDataset(out)
    assert ds.num_episodes == 1 and ds.episodes[0].success is True and ds.image_size == (8, 8)
    assert ds.episodes[0].instruction == "wipe the table"
    assert ds.action_scales == {"linear_scale": 0.1, "angular_scale": 0.5, "action_limit": 1.0}  # recorded with it
    frames = ds.frames(0)
    assert np.abs(frames[..., 1].astype(int) - 7).max() <= 3
    ts = EpisodeDataset(out).episodes[0].length
    assert ts < 19  # frames with a stale twist were dropped, not paired with an old command


def test_errors_are_clear(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP, [i / 30 for i in range(30)], [i / 20 for i in range(20)],
                    instruction=None)
    assert lapa(["data", "import-bag", str(bag), "--out", str(tmp_path / "a"), "--twist-topic", "/cmd"]) == 2
    err = capsys.readouterr().err
    assert "topic /cmd is not in the bag" in err and "/servo_node/delta_twist_cmds" in err
    assert lapa(["data", "import-bag", str(bag), "--out", str(tmp_path / "b"), "--linear-scale", "0.1"]) == 2
    assert "no instruction" in capsys.readouterr().err
    assert lapa(["data", "import-bag", str(tmp_path / "nope"), "--out", str(tmp_path / "c")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "junk").mkdir()
    assert lapa(["data", "import-bag", str(tmp_path / "junk"), "--out", str(tmp_path / "d")]) == 2
    assert "no metadata.yaml in this folder" in capsys.readouterr().err
    assert lapa(["data", "import-bag", str(bag), "--out", str(tmp_path / "e"), "--image-topic", "/gripper/command",
                 "--instruction", "x"]) == 2
    assert "has type std_msgs/msg/Float64" in capsys.readouterr().err


def test_a_truncated_metadata_yaml_and_other_non_bags_are_one_clear_line(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP, [i / 30 for i in range(30)], [i / 20 for i in range(20)])
    meta = bag / "metadata.yaml"
    meta.write_text(meta.read_text()[:40])  # cut short, as by a full disk or a killed recorder
    assert lapa(["data", "import-bag", str(bag), "--out", str(tmp_path / "a"), "--instruction", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lapa: error: {bag}: not a readable rosbag2")
    assert "metadata.yaml complete" in err and "Traceback" not in err
    (tmp_path / "notes.txt").write_text("hello")
    assert lapa(["data", "import-bag", str(tmp_path / "notes.txt"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "not a rosbag2 bag" in err and "folder with metadata.yaml" in err and str(tmp_path / "notes.txt") in err
    (tmp_path / "junk.mcap").write_bytes(b"garbage")
    assert lapa(["data", "import-bag", str(tmp_path / "junk.mcap"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lapa: error: {tmp_path / 'junk.mcap'}: not a readable") and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()


def test_a_lone_mcap_file_without_metadata_yaml_is_read(tmp_path):
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP, [i / 30 for i in range(30)], [i / 20 for i in range(20)])
    (lone,) = bag.glob("*.mcap")
    moved = tmp_path / "elsewhere" / "session.mcap"
    moved.parent.mkdir()
    lone.rename(moved)  # no metadata.yaml beside it
    assert lapa(["data", "import-bag", str(moved), "--out", str(tmp_path / "ds"), "--linear-scale", "0.1"]) == 0
    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.episodes[0].instruction == "stack the cups"


@pytest.mark.parametrize("latency", [0.1, 0.3])
def test_header_stamps_are_honoured_when_images_are_logged_late(tmp_path, latency):
    """Camera images logged `latency` s after their stamp: a frame waits for every image stamped at or before it."""
    images, twists = [i / 30 for i in range(60)], [j / 20 for j in range(40)]
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP, images, twists, image_latency=latency,
                    image_value=lambda t: round(t * 30) * 4)  # image #i has value 4i
    (episode,), dropped = read_bag_episodes(bag, ImportOptions(**OPTS, header_stamps=True))
    assert dropped == {"image": 0, "twist": 0, "gripper": 0}
    assert [f[0, 0, 0] // 4 for f in episode.frames] == [3 * k for k in range(20)]  # frame k (k/10 s): image #3k


def test_bags_of_different_camera_sizes_are_one_clear_error(tmp_path, capsys):
    images, twists = [i / 30 for i in range(30)], [i / 20 for i in range(20)]
    small = write_bag(tmp_path / "small", StoragePlugin.MCAP, images, twists)
    big = write_bag(tmp_path / "big", StoragePlugin.MCAP, images, twists, size=(24, 32))
    assert lapa(["data", "import-bag", str(small), str(big), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lapa: error: {big}: its images are 24x32 (HxW)")
    assert "12x16" in err and "--image-size" in err


@pytest.mark.parametrize("flag, value", [("--min-frames", "1"), ("--min-frames", "0"), ("--min-frames", "-3"),
                                         ("--gripper-default", "nan"), ("--gripper-default", "inf"),
                                         ("--image-max-age", "-1"), ("--twist-max-age", "0"),
                                         ("--gripper-max-age", "nan"), ("--video-key", "../../escaped"),
                                         ("--video-key", ""), ("--video-key", "a/b")])
def test_bad_option_values_are_one_line_naming_the_flag(tmp_path, capsys, flag, value):
    assert lapa(["data", "import-bag", str(tmp_path / "bag"), "--out", str(tmp_path / "ds"), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lapa: error: {flag} must")
    assert not any(tmp_path.iterdir())  # refused before anything is read or written


def test_a_nan_twist_names_the_bag_topic_and_time(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP, [i / 30 for i in range(30)], [i / 20 for i in range(20)],
                    twist_x=lambda t: float("nan") if t == 0.5 else t / 100)
    assert lapa(["data", "import-bag", str(bag), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"lapa: error: {bag}: the message on /servo_node/delta_twist_cmds at t=100.500 s holds NaN")


def test_overwrite_checks_every_bag_before_touching_the_dataset(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP, [i / 30 for i in range(30)], [i / 20 for i in range(20)])
    out = tmp_path / "ds"
    assert lapa(["data", "import-bag", str(bag), "--out", str(out), "--instruction", "first"]) == 0
    (tmp_path / "junk.mcap").write_bytes(b"garbage")
    assert lapa(["data", "import-bag", str(bag), str(tmp_path / "junk.mcap"), "--out", str(out), "--overwrite",
                 "--instruction", "second"]) == 2
    assert capsys.readouterr().err.startswith(f"lapa: error: {tmp_path / 'junk.mcap'}: not a readable")
    assert [ep.instruction for ep in EpisodeDataset(out).episodes] == ["first"]  # the old dataset is untouched


def test_an_undecodable_compressed_image_names_the_bag(tmp_path, capsys):
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        image = w.add_connection("/camera/image_raw", "sensor_msgs/msg/CompressedImage", typestore=TS)
        twist = w.add_connection("/servo_node/delta_twist_cmds", "geometry_msgs/msg/TwistStamped", typestore=TS)
        for i in range(5):
            t = i / 10
            msg = T["sensor_msgs/msg/CompressedImage"](header=_header(t), format="jpeg",
                                                       data=np.zeros(40, np.uint8))
            w.write(image, int((100 + t) * NS), TS.serialize_cdr(msg, msg.__msgtype__))
            msg = _twist(t, 0.0)
            w.write(twist, int((100 + t) * NS) + 1, TS.serialize_cdr(msg, msg.__msgtype__))
    assert lapa(["data", "import-bag", str(bag), "--out", str(tmp_path / "ds"), "--instruction", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"lapa: error: {bag}: image on /camera/image_raw at t=100.")
    assert "could not be decoded" in err


def test_header_stamps_far_out_of_log_order_are_refused(tmp_path):
    """Images logged 6 s after their stamps (two clocks?) would hold 6 s of the bag in memory: one clear error."""
    bag = write_bag(tmp_path / "bag", StoragePlugin.MCAP, [i / 30 for i in range(30)], [i / 20 for i in range(140)],
                    image_latency=6.0)
    with pytest.raises(DatasetError, match=r"bag: with --header-stamps, the message on /camera/image_raw stamped "
                                           r"t=0\.000 s was logged after one stamped 6\.0 s later"):
        read_bag_episodes(bag, ImportOptions(**OPTS, header_stamps=True))
