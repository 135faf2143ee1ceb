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
from lapa_learning.data.testing import FPS, IMAGE_KEY, INSTRUCTIONS, KEYS, SIZE, png_cells, write_lerobot_v3
from lapa_learning.errors import DatasetError

@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot_v3") / "ds"
    return root, write_lerobot_v3(root)


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
