"""Malformed dataset files (meta/info.json, the JSON-lines metadata, data parquet files, truncated videos) are one
clear DatasetError naming the file and what was expected, never a KeyError, TypeError or a silently wrong read."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lapa_learning.data import EpisodeDataset, EpisodeWriter, VideoFolder
from lapa_learning.data.testing import write_lerobot_v3
from lapa_learning.errors import DatasetError

VIDEO_KEY = "observation.images.front"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """Two 4-frame 16x16 episodes with 2 actions and 3 states each."""
    root = tmp_path_factory.mktemp("malformed") / "ds"
    rng = np.random.default_rng(0)
    with EpisodeWriter(root, fps=10, image_size=(16, 16), action_names=("a", "b"), state_names=("x", "y", "z")) as w:
        for instruction in ("push", "pull"):
            w.add_episode(rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8), instruction,
                          actions=rng.uniform(-1, 1, (4, 2)), states=rng.uniform(-1, 1, (4, 3)))
    return root


def _copy(small, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(small, root)
    return root


def _edit_info(root, edit):
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))  # a float("inf") is written as Infinity, which Python's json reads back


@pytest.mark.parametrize("edit, match", [
    (lambda i: i.update(lapa=None), r"'lapa' must be a JSON object.*got None"),
    (lambda i: i["features"].update(timestamp="float32"), r"feature 'timestamp' must be a JSON object"),
    (lambda i: i["features"]["action"].update(shape=2), r"feature 'action' has shape 2; expected a list of sizes"),
    (lambda i: i["features"][VIDEO_KEY]["info"].update({"video.height": "sixteen"}),
     r"video feature 'observation.images.front' has info video.height, video.width \['sixteen', 16\]; expected "
     r"positive integers"),
    (lambda i: i.update(fps=True), r"'fps' must be a positive finite number, got True"),
    (lambda i: i.update(fps=float("inf")), r"'fps' must be a positive finite number, got inf"),
], ids=["lapa-null", "feature-string", "shape-int", "height-string", "fps-true", "fps-infinity"])
def test_malformed_info_json_is_named(small, tmp_path, edit, match):
    root = _copy(small, tmp_path)
    _edit_info(root, edit)
    with pytest.raises(DatasetError, match=r"meta/info.json: " + match):
        EpisodeDataset(root)


@pytest.mark.parametrize("name, damage, match", [
    ("tasks.jsonl", lambda text: text.replace('"task_index": 1, ', ""),
     r"meta/tasks.jsonl line 2: expected a JSON object with 'task_index' \(int\), 'task' \(str\), got \{\"task\": "),
    ("tasks.jsonl", lambda text: text + "[1, 2]\n", r"meta/tasks.jsonl line 3: expected a JSON object .*got \[1, 2\]"),
    ("episodes.jsonl", lambda text: text.replace('"episode_index": 1', '"episode_index": 0'),
     r"meta/episodes.jsonl: episode_index 0 is in more than one row"),
    ("episodes.jsonl", lambda text: text.encode("utf-16"), r"meta/episodes.jsonl is not UTF-8 text"),
    ("tasks.jsonl", lambda text: b"\xff\x00garbage\n", r"meta/tasks.jsonl is not UTF-8 text"),
], ids=["task-without-index", "task-row-list", "duplicate-episode", "episodes-utf16", "tasks-not-utf8"])
def test_malformed_jsonl_metadata_is_named(small, tmp_path, name, damage, match):
    root = _copy(small, tmp_path)
    path = root / "meta" / name
    damaged = damage(path.read_text())
    path.write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
    with pytest.raises(DatasetError, match=match):
        EpisodeDataset(root)


@pytest.mark.parametrize("column, values, read, match", [
    ("action", None, "actions", r"has no 'action' column"),
    ("action", [[0.5] * 3] * 4, "actions",
     r"column 'action' has shape \[4, 3\], expected \[4, 2\] \(2 numbers per frame"),
    ("action", ["x"] * 4, "actions", r"column 'action' has shape \[4\], expected \[4, 2\]"),
    ("observation.state", [[0.5]] * 4, "states", r"column 'observation.state' has shape \[4, 1\], expected \[4, 3\]"),
], ids=["no-action", "action-too-wide", "action-strings", "state-too-narrow"])
def test_data_parquet_columns_must_match_info_json(small, tmp_path, column, values, read, match):
    root = _copy(small, tmp_path)
    path = root / "data/chunk-000/episode_000001.parquet"
    table = pq.read_table(path).drop([column])
    pq.write_table(table if values is None else table.append_column(column, pa.array(values)), path)
    ds = EpisodeDataset(root)
    getattr(ds, read)(0)  # the other episode is fine
    with pytest.raises(DatasetError, match=r"episode 1: data file .*episode_000001.parquet " + match):
        getattr(ds, read)(1)


def test_v3_episodes_parquet_without_episode_index_is_named(tmp_path):
    root = tmp_path / "v3"
    write_lerobot_v3(root, lengths=(3, 4))
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(path).drop(["episode_index"]), path)
    with pytest.raises(DatasetError, match=r"meta/episodes/chunk-000/file-000.parquet has no episode_index column"):
        EpisodeDataset(root)


def test_truncated_faststart_video_in_a_folder_raises_when_decoded(tmp_path):
    """A faststart mp4 (index at the front) cut short still lists its full frame count; decoding it must say so."""
    import av

    folder = tmp_path / "videos"
    folder.mkdir()
    path = folder / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        for frame in rng.integers(0, 255, (60, 16, 16, 3), dtype=np.uint8):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    source = VideoFolder(folder, fps=10)
    assert source.episodes[0].length == 60  # indexing only probes the header
    with pytest.raises(DatasetError, match=r"clip.mp4 decodes to \d+ frames, but its header lists 60 .*truncated"):
        source.frames(0)
