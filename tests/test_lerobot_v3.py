"""Reading LeRobotDataset v3.0 (LeRobot >= 0.4: many episodes per data and video file), and cameras stored as
images in the data parquet (LeRobot's "image" dtype, v2.1 and v3.0). The datasets here are built by hand in those
layouts; scripts/lerobot_v3_compat.py checks the reader against datasets LeRobot itself writes."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lapa_learning.cli import main
from lapa_learning.data import EpisodeDataset, EpisodeWriter
from lapa_learning.data.video import write_video
from lapa_learning.errors import DatasetError

FPS, SIZE = 10, 32
KEYS = ("observation.images.top", "observation.images.wrist")
IMAGE_KEY = "observation.images.png"  # a third camera, stored as PNG bytes in the data files


def png_cells(frames: np.ndarray) -> list[dict]:
    """Frames as LeRobot (HF datasets) stores an image feature: {"bytes": PNG, "path": name}."""
    import cv2

    return [{"bytes": cv2.imencode(".png", f[..., ::-1])[1].tobytes(), "path": f"frame_{t:06d}.png"}
            for t, f in enumerate(frames)]
INSTRUCTIONS = ("push the block", "open the drawer")


def episode_frames(e: int, length: int, camera: int) -> np.ndarray:
    """A square that moves right one pixel per frame, its row and colour set by the episode and the camera."""
    frames = np.full((length, SIZE, SIZE, 3), 20, np.uint8)
    for t in range(length):
        y, x = 4 + 3 * e, min(2 + t, SIZE - 7)
        frames[t, y:y + 6, x:x + 6] = (200, 60 + 40 * e, 40 + 150 * camera)
    return frames


def write_v3(root, lengths=(7, 9, 6, 8), per_file: int = 2):
    """Episodes `per_file` to a data file and to a video file (two files of each, in two chunks), two cameras; the
    episodes' frames, actions and instructions are returned for comparison."""
    rng = np.random.default_rng(0)
    episodes, rows, start = [], [], 0
    for e, n in enumerate(lengths):
        actions = rng.uniform(-1, 1, (n, 4)).astype(np.float32)
        episodes.append({"frames": [episode_frames(e, n, c) for c in range(2)], "actions": actions,
                         "states": np.cumsum(actions, 0)[:, :3].astype(np.float32),
                         "instruction": INSTRUCTIONS[e % 2]})
    for f in range(0, len(lengths), per_file):
        chunk, file = f // per_file, 0  # one file per chunk, to use chunk indices too
        group = range(f, min(f + per_file, len(lengths)))
        data = {"action": [], "observation.state": [], "timestamp": [], "frame_index": [], "episode_index": [],
                "index": [], "task_index": [], IMAGE_KEY: []}
        offset = 0.0
        for e in reversed(group):  # rows need not be in episode order within a file
            ep = episodes[e]
            n = len(ep["actions"])
            data["action"] += ep["actions"].tolist()
            data["observation.state"] += ep["states"].tolist()
            data["timestamp"] += (np.arange(n) / FPS).tolist()
            data["frame_index"] += list(range(n))
            data["episode_index"] += [e] * n
            data["index"] += list(range(start, start + n))
            data["task_index"] += [e % 2] * n
            data[IMAGE_KEY] += png_cells(255 - ep["frames"][0])
            start += n
        path = root / f"data/chunk-{chunk:03d}/file-{file:03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(data), path)
        for c, key in enumerate(KEYS):
            video = root / f"videos/{key}/chunk-{chunk:03d}/file-{file:03d}.mp4"
            video.parent.mkdir(parents=True, exist_ok=True)
            write_video(video, np.concatenate([episodes[e]["frames"][c] for e in group]), fps=FPS)
        for e in group:
            n = len(episodes[e]["actions"])
            row = {"episode_index": e, "tasks": [episodes[e]["instruction"]], "length": n,
                   "data/chunk_index": chunk, "data/file_index": file,
                   "dataset_from_index": 0, "dataset_to_index": n}
            for key in KEYS:
                row.update({f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                            f"videos/{key}/from_timestamp": offset, f"videos/{key}/to_timestamp": offset + n / FPS})
            offset += n / FPS
            rows.append(row)
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows[::-1]), path)
    pq.write_table(pa.table({"task_index": [0, 1], "__index_level_0__": list(INSTRUCTIONS)}),
                   root / "meta/tasks.parquet")
    video = {"dtype": "video", "shape": [3, SIZE, SIZE], "names": ["channels", "height", "width"]}
    info = {"codebase_version": "v3.0", "fps": FPS, "robot_type": "so100", "total_episodes": len(lengths),
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": {KEYS[0]: video, KEYS[1]: dict(video),
                         IMAGE_KEY: {"dtype": "image", "shape": [SIZE, SIZE, 3], "names": ["height", "width", "channel"]},
                         "action": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "gripper"]},
                         "observation.state": {"dtype": "float32", "shape": [3], "names": {"motors": ["a", "b", "c"]}},
                         "timestamp": {"dtype": "float32", "shape": [1], "names": None}}}
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "meta/stats.json").write_text('{"action": {"mean": [0, 0, 0, 0]}}')  # LeRobot's: must stay as it is
    return episodes


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot_v3") / "ds"
    return root, write_v3(root)


def test_episodes_frames_actions_and_cameras(v3, capsys):
    root, episodes = v3
    ds = EpisodeDataset(root)
    assert ds.layout == "v3.0" and ds.video_key == KEYS[0] and ds.image_size == (SIZE, SIZE)  # [3, H, W] + names
    assert [ep.index for ep in ds.episodes] == [0, 1, 2, 3] and [ep.length for ep in ds.episodes] == [7, 9, 6, 8]
    assert [ep.instruction for ep in ds.episodes] == list(INSTRUCTIONS) * 2 and ds.tasks == list(INSTRUCTIONS)
    assert ds.action_names == ("x", "y", "z", "gripper") and ds.state_names == ("a", "b", "c")
    wrist = EpisodeDataset(root, video_key="wrist")
    for e, ep in enumerate(episodes):
        for reader, c in ((ds, 0), (wrist, 1)):
            got = reader.frames(e).astype(int)
            assert got.shape == ep["frames"][c].shape
            assert np.abs(got - ep["frames"][c]).mean() < 3, (e, c)  # its own frames, not a neighbour's
        np.testing.assert_array_equal(ds.actions(e), ep["actions"])
        np.testing.assert_array_equal(ds.states(e), ep["states"])
        np.testing.assert_allclose(ds.timestamps(e), np.arange(len(ep["actions"])) / FPS, atol=1e-6)
    stats = ds.action_stats()
    np.testing.assert_allclose(stats["mean"], np.concatenate([ep["actions"] for ep in episodes]).mean(0), atol=1e-6)
    assert json.loads((root / "meta/stats.json").read_text()) == {"action": {"mean": [0, 0, 0, 0]}}  # untouched

    assert main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "4 episodes, 30 frames, 2 instructions, 32x32 @ 10 fps, actions ['x', 'y', 'z', 'gripper'], LeRobot v3.0" in out
    assert f"camera read: {KEYS[0]} (not read: {KEYS[1]}, {IMAGE_KEY})" in out


def test_image_cameras_in_v3_and_v21(v3, tmp_path):
    root, episodes = v3
    png = EpisodeDataset(root, video_key="png")
    assert png.image_size == (SIZE, SIZE)
    for e, ep in enumerate(episodes):
        np.testing.assert_array_equal(png.frames(e), 255 - ep["frames"][0])  # PNG is lossless
    np.testing.assert_array_equal(png.actions(2), episodes[2]["actions"])

    # v2.1 (one data file per episode), as LeRobot writes with use_videos=False
    from lapa_learning.data import format as fmt
    from lapa_learning.laq.testing import write_dataset

    v21 = write_dataset(tmp_path / "v21", episodes=2, length=6)
    truth = EpisodeDataset(v21)
    for e in range(2):
        path = fmt.data_path(v21, e)
        table = pq.read_table(path)
        pq.write_table(table.append_column(IMAGE_KEY, pa.array(png_cells(255 - truth.frames(e)))), path)
    info = json.loads((v21 / "meta/info.json").read_text())
    info["features"][IMAGE_KEY] = {"dtype": "image", "shape": [3, 32, 32], "names": ["channels", "height", "width"]}
    (v21 / "meta/info.json").write_text(json.dumps(info))
    ds = EpisodeDataset(v21, video_key=IMAGE_KEY)
    np.testing.assert_array_equal(ds.frames(1), 255 - truth.frames(1))
    np.testing.assert_array_equal(ds.actions(1), truth.actions(1))
    assert IMAGE_KEY not in ds._tables[1]  # encoded images are decoded per call, not kept in memory
    table = pq.read_table(fmt.data_path(v21, 0))
    cells = table.column(IMAGE_KEY).to_pylist()
    cells[3] = {"bytes": b"garbage", "path": None}
    pq.write_table(table.set_column(table.column_names.index(IMAGE_KEY), IMAGE_KEY, pa.array(cells)),
                   fmt.data_path(v21, 0))
    with pytest.raises(DatasetError, match="episode 0 observation.images.png: frame 3 holds no decodable image"):
        ds.frames(0)


def test_v3_is_read_only_and_damage_is_named(v3, tmp_path):
    import shutil

    root, _ = v3
    with pytest.raises(DatasetError, match="cannot append to .*: it is a LeRobot v3.0 dataset, which lapa reads but "
                                           "does not write"):
        EpisodeWriter(root, fps=FPS, image_size=(SIZE, SIZE), video_key=KEYS[0], mode="append",
                      action_names=("x", "y", "z", "gripper"), state_names=("a", "b", "c"))
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / f"videos/{KEYS[0]}/chunk-001/file-000.mp4").write_bytes(b"not a video")
    ds = EpisodeDataset(broken)
    ds.frames(1)  # the other file is fine
    with pytest.raises(DatasetError, match="chunk-001/file-000.mp4"):
        ds.frames(2)
    (broken / "data/chunk-000/file-000.parquet").unlink()
    with pytest.raises(DatasetError, match=r"episode 0: data file .*chunk-000/file-000.parquet is missing"):
        ds.actions(0)
    rows = pq.read_table(broken / "meta/episodes/chunk-000/file-000.parquet").drop(["data/file_index"])
    pq.write_table(rows, broken / "meta/episodes/chunk-000/file-000.parquet")
    with pytest.raises(DatasetError, match="lacks 'data/file_index'"):
        EpisodeDataset(broken)
    shutil.rmtree(broken / "meta/episodes")
    with pytest.raises(DatasetError, match="LeRobot v3.0 dataset without episodes"):
        EpisodeDataset(broken)


@pytest.mark.slow
def test_finetune_on_a_v3_dataset(v3, tmp_path):
    root, _ = v3
    out = tmp_path / "ft"
    assert main(["vla", "finetune", "--data", str(root), "--camera", "wrist", "--out", str(out), "--max-steps", "2",
                 "--batch-size", "4", "--config", "tiny", "--no-progress", "--threads", "1"]) == 0
    rec = json.loads((out / "checkpoint" / "train_record.json").read_text())
    assert rec["datasets"][0]["camera"] == KEYS[1] and rec["train_episodes"] == 3  # one held out
