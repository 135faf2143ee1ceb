"""Episode datasets: generate, read back, determinism, atomic writes, bad inputs, video folders, frame pairs."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lapa_learning.data import EpisodeDataset, EpisodeWriter, FramePairDataset, VideoFolder, split_episodes
from lapa_learning.data.generate import generate
from lapa_learning.data.video import write_video
from lapa_learning.errors import ConfigError, DatasetError

TASKS = ["push-v3", "pick-place-v3"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "ds"
    generate(out, TASKS, episodes_per_task=2, max_steps=80, seed=3, action_noise=0.05, progress=False)
    return out


def test_generated_dataset_reads_back(generated):
    ds = EpisodeDataset(generated)
    assert ds.num_episodes == 4 and ds.has_actions
    assert ds.action_names == ("dx", "dy", "dz", "gripper") and ds.fps == 80
    assert [ep.task for ep in ds.episodes] == ["push-v3"] * 2 + ["pick-place-v3"] * 2
    for ep in ds.episodes:
        frames, actions, states = ds.frames(ep.index), ds.actions(ep.index), ds.states(ep.index)
        assert frames.shape == (ep.length, 64, 64, 3) and frames.dtype == np.uint8
        assert actions.shape == (ep.length, 4) and states.shape == (ep.length, 4)
        assert np.all(np.abs(actions) <= 1.0)
        assert ep.instruction and ep.success is not None
    info = json.loads((generated / "meta/info.json").read_text())
    assert info["codebase_version"] == "v2.1" and info["total_frames"] == ds.num_frames
    assert "observation.images.front" in info["features"]
    stats = ds.action_stats()
    assert len(stats["mean"]) == 4 and set(stats["quantiles"]) >= {"0.01", "0.5", "0.99"}
    assert (generated / "meta/stats.json").is_file()


def test_actions_are_what_the_expert_did(generated):
    """Replaying the recorded layout seed and actions reproduces the recorded states."""
    from lapa_learning.sim.metaworld_env import MetaWorldEnv
    from lapa_learning.sim.seeds import train_seed

    ds = EpisodeDataset(generated)
    actions, states = ds.actions(0), ds.states(0)
    with MetaWorldEnv("push-v3", max_steps=80) as env:
        obs = env.reset(train_seed(3, 0))
        np.testing.assert_allclose(obs.state, states[0], atol=1e-6)
        for t in range(ds.episode(0).length - 1):
            obs, _, _ = env.step(actions[t])
            np.testing.assert_allclose(obs.state, states[t + 1], atol=1e-5)


def test_generation_is_deterministic_for_a_seed(generated, tmp_path):
    again = tmp_path / "again"
    generate(again, TASKS, episodes_per_task=2, max_steps=80, seed=3, action_noise=0.05, progress=False)
    a, b = EpisodeDataset(generated), EpisodeDataset(again)
    assert [e.instruction for e in a.episodes] == [e.instruction for e in b.episodes]
    for ep in a.episodes:
        np.testing.assert_array_equal(a.actions(ep.index), b.actions(ep.index))
        np.testing.assert_array_equal(a.frames(ep.index), b.frames(ep.index))


@pytest.mark.slow
def test_worker_processes_write_the_same_dataset(generated, tmp_path):
    """Rollouts in 2 worker processes (out of order, each env with its own history) give the same dataset byte for
    byte; --only-success stops at the same seeds; a bad --workers is named."""
    par = tmp_path / "par"
    generate(par, TASKS, episodes_per_task=2, max_steps=80, seed=3, action_noise=0.05, progress=False, workers=2)
    a, b = EpisodeDataset(generated), EpisodeDataset(par)
    assert a.episodes == b.episodes
    for ep in a.episodes:
        np.testing.assert_array_equal(a.actions(ep.index), b.actions(ep.index))
        np.testing.assert_array_equal(a.frames(ep.index), b.frames(ep.index))
        video = "videos/chunk-000/observation.images.front/episode_%06d.mp4" % ep.index
        assert (generated / video).read_bytes() == (par / video).read_bytes()
    kept = {}
    for workers in (1, 2):  # with 60 steps the push expert fails some layouts: those are skipped in order
        out = tmp_path / f"success{workers}"
        generate(out, ["push-v3"], episodes_per_task=3, max_steps=60, seed=3, only_success=True, progress=False,
                 workers=workers)
        ds = EpisodeDataset(out)
        kept[workers] = [ds.actions(e.index).tobytes() for e in ds.episodes]
    assert kept[1] == kept[2] and len(kept[1]) == 3
    with pytest.raises(ConfigError, match="--workers must be a positive number of processes, got 0"):
        generate(tmp_path / "bad", TASKS, episodes_per_task=1, progress=False, workers=0)


def test_refuses_to_overwrite_silently(generated):
    with pytest.raises(DatasetError, match="already exists"):
        EpisodeWriter(generated, fps=80, image_size=(64, 64), action_names=("a",))


def test_odd_image_sizes_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(DatasetError, match=r"image size 479x641 .*even sizes.*--image-size 478,640"):
        EpisodeWriter(tmp_path / "odd", fps=10, image_size=(479, 641), action_names=("a",))
    assert not (tmp_path / "odd").exists()


def test_an_empty_dataset_left_by_a_failed_run_is_reused_but_one_with_episodes_is_not(tmp_path, generated):
    root = tmp_path / "ds"
    EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",))  # created, then the run failed
    w = EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",))  # create again: allowed
    w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "wave", actions=np.zeros((3, 1), np.float32))
    w.close()
    with pytest.raises(DatasetError, match="already exists"):
        EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",))
    (tmp_path / "mine").mkdir()
    EpisodeWriter(tmp_path / "mine", fps=10, image_size=(8, 8), action_names=("a",))
    (tmp_path / "mine" / "notes.txt").write_text("the user's")  # a file of the user's: never removed
    with pytest.raises(DatasetError, match="already exists"):
        EpisodeWriter(tmp_path / "mine", fps=10, image_size=(8, 8), action_names=("a",))


def test_action_free_dataset(tmp_path):
    out = tmp_path / "free"
    generate(out, ["push-v3"], episodes_per_task=1, max_steps=30, action_free=True, progress=False)
    ds = EpisodeDataset(out)
    assert not ds.has_actions and ds.episodes[0].instruction
    assert ds.frames(0).shape[1:] == (64, 64, 3)
    with pytest.raises(DatasetError, match="action-free"):
        ds.actions(0)


def _random_episode(rng, t=6, size=16):
    return rng.integers(0, 255, (t, size, size, 3), dtype=np.uint8), rng.uniform(-1, 1, (t, 2)).astype(np.float32)


def test_full_disk_reports_clearly_and_keeps_earlier_episodes(tmp_path, rng, monkeypatch):
    writer = EpisodeWriter(tmp_path / "ds", fps=10, image_size=(16, 16), action_names=("a", "b"))
    frames, actions = _random_episode(rng)
    writer.add_episode(frames, "first", actions=actions)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("lapa_learning.data.writer._write_parquet", no_space)
    with pytest.raises(DatasetError, match="disk is full.*1 earlier episode"):
        writer.add_episode(frames, "second", actions=actions)
    ds = EpisodeDataset(tmp_path / "ds")
    assert ds.num_episodes == 1 and ds.frames(0).shape == (6, 16, 16, 3)
    assert not list((tmp_path / "ds").rglob("*.tmp*")) and not list((tmp_path / "ds").rglob("episode_000001*"))


def test_bad_episode_inputs_are_named(tmp_path, rng):
    writer = EpisodeWriter(tmp_path / "ds", fps=10, image_size=(16, 16), action_names=("a", "b"))
    frames, actions = _random_episode(rng)
    with pytest.raises(ValueError, match=r"frames must be \(T, 16, 16, 3\) uint8"):
        writer.add_episode(frames.astype(np.float32), "x", actions=actions)
    with pytest.raises(ValueError, match="instruction must be a non-empty string"):
        writer.add_episode(frames, " ", actions=actions)
    with pytest.raises(ValueError, match=r"actions must be \(6, 2\)"):
        writer.add_episode(frames, "x", actions=actions[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        writer.add_episode(frames, "x", actions=np.full_like(actions, np.nan))


def test_missing_and_corrupt_dataset_files(tmp_path, rng):
    with pytest.raises(DatasetError, match="meta/info.json is missing"):
        EpisodeDataset(tmp_path)
    with EpisodeWriter(tmp_path / "ds", fps=10, image_size=(16, 16), action_names=("a", "b")) as writer:
        writer.add_episode(*_random_episode(rng)[:1], "x", actions=_random_episode(rng)[1])
    video = next((tmp_path / "ds").rglob("*.mp4"))
    video.write_bytes(video.read_bytes()[:100])
    with pytest.raises(DatasetError, match="episode_000000.mp4"):
        EpisodeDataset(tmp_path / "ds").frames(0)
    (tmp_path / "ds/meta/info.json").write_text("{not json")
    with pytest.raises(DatasetError, match="info.json is not valid JSON"):
        EpisodeDataset(tmp_path / "ds")


KILL_SCRIPT = """
import sys, numpy as np
from lapa_learning.data import EpisodeWriter
w = EpisodeWriter(sys.argv[1], fps=10, image_size=(32, 32), action_names=("a", "b"), mode=sys.argv[2])
rng = np.random.default_rng(0)
for i in range(1000):
    frames = rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    w.add_episode(frames, f"episode {i}", actions=rng.uniform(-1, 1, (40, 2)))
    print(i, flush=True)
"""


def test_kill_during_writing_leaves_only_complete_episodes(tmp_path):
    root = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(root), "create"], stdout=subprocess.PIPE, text=True)
    for _ in range(3):  # let it commit a few episodes, then kill it mid-way through another
        proc.stdout.readline()
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    ds = EpisodeDataset(root)
    assert ds.num_episodes >= 3
    for ep in ds.episodes:  # every visible episode is complete and readable
        assert ds.frames(ep.index).shape == (40, 32, 32, 3)
        assert ds.actions(ep.index).shape == (40, 2)
    # Appending after the crash cleans leftovers and continues the numbering.
    writer = EpisodeWriter(root, fps=10, image_size=(32, 32), action_names=("a", "b"), mode="append")
    assert writer.num_episodes == ds.num_episodes
    assert not list(root.rglob("*.tmp*"))
    assert len(list(root.rglob("episode_*.mp4"))) == ds.num_episodes


def test_append_checks_compatibility(tmp_path, rng):
    with EpisodeWriter(tmp_path / "ds", fps=10, image_size=(16, 16), action_names=("a", "b")) as writer:
        writer.add_episode(*_random_episode(rng)[:1], "x", actions=_random_episode(rng)[1])
    with pytest.raises(DatasetError, match="fps: dataset has 10.0"):
        EpisodeWriter(tmp_path / "ds", fps=20, image_size=(16, 16), action_names=("a", "b"), mode="append")


def test_recorded_action_scales_are_kept_checked_on_append_and_shown(tmp_path, rng, capsys):
    """A teleop or bag set records the velocity per action unit; appending with other scales is refused."""
    from lapa_learning.cli import main as lapa

    scales = {"linear_scale": 0.1, "angular_scale": 0.5, "action_limit": 1.0}
    frames, actions = _random_episode(rng)[:2]
    with EpisodeWriter(tmp_path / "ds", fps=10, image_size=(16, 16), action_names=("a", "b"),
                       action_scales=scales) as writer:
        writer.add_episode(frames, "x", actions=actions)
    assert EpisodeDataset(tmp_path / "ds").action_scales == scales
    with pytest.raises(DatasetError, match=r"action_scales: dataset has .*'linear_scale': 0.1.*'linear_scale': 0.8"):
        EpisodeWriter(tmp_path / "ds", fps=10, image_size=(16, 16), action_names=("a", "b"), mode="append",
                      action_scales={**scales, "linear_scale": 0.8})
    with EpisodeWriter(tmp_path / "ds", fps=10, image_size=(16, 16), action_names=("a", "b"), mode="append",
                       action_scales=scales) as writer:
        writer.add_episode(frames, "y", actions=actions)
    assert EpisodeDataset(tmp_path / "ds").action_scales == scales
    assert lapa(["data", "info", str(tmp_path / "ds")]) == 0
    assert "action scales: linear_scale 0.1, angular_scale 0.5, action_limit 1" in capsys.readouterr().out
    # A set written without scales (simulated data, older sets): appending with scales cannot claim them for all.
    with EpisodeWriter(tmp_path / "old", fps=10, image_size=(16, 16), action_names=("a", "b")) as writer:
        writer.add_episode(frames, "x", actions=actions)
    with EpisodeWriter(tmp_path / "old", fps=10, image_size=(16, 16), action_names=("a", "b"), mode="append",
                       action_scales=scales) as writer:
        writer.add_episode(frames, "y", actions=actions)
    assert EpisodeDataset(tmp_path / "old").action_scales is None
    # A damaged entry is one clear error naming the file
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    info["lapa"]["action_scales"] = "fast"
    (tmp_path / "ds" / "meta" / "info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"info.json: 'lapa' -> 'action_scales' must map names to numbers"):
        EpisodeDataset(tmp_path / "ds")


def test_video_folder_skips_and_counts_corrupt_videos(tmp_path, rng):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "b.mp4"):
        write_video(folder / name, rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), fps=10)
    (folder / "broken.mp4").write_bytes((folder / "a.mp4").read_bytes()[:200])  # truncated
    (folder / "empty.mp4").write_bytes(b"")
    frames_dir = folder / "c"
    frames_dir.mkdir()
    import cv2

    for i in range(5):
        cv2.imwrite(str(frames_dir / f"{i:05d}.png"), rng.integers(0, 255, (24, 40, 3), dtype=np.uint8))
    (folder / "instructions.jsonl").write_text('{"video": "a.mp4", "instruction": "open the drawer"}\n'
                                               '{"video": "c", "instruction": "wave"}\n')
    with pytest.warns(UserWarning, match="skipping"):
        source = VideoFolder(folder, fps=10)
    assert source.num_episodes == 3 and len(source.skipped) == 2
    assert source.image_size == (32, 32)  # the largest of the sources (32x32 videos, 24x40 frames)
    assert {Path(p).name for p, _ in source.skipped} == {"broken.mp4", "empty.mp4"}
    assert source.episodes[0].instruction == "open the drawer" and source.episodes[2].instruction == "wave"
    pairs = FramePairDataset(source, offset_frames=3, image_size=16)
    assert len(pairs) == 9 + 9 + 2
    assert pairs[0]["frames"].shape == (2, 3, 16, 16)


def test_cli_prints_a_skipped_video_as_one_warning_line(tmp_path, rng, capsys):
    from lapa_learning.cli import main

    folder = tmp_path / "videos"
    folder.mkdir()
    write_video(folder / "a.mp4", rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8), fps=10)
    (folder / "broken.mp4").write_bytes(b"not a video")
    assert main(["data", "info", str(folder)]) == 0
    err = capsys.readouterr().err
    assert f"lapa: warning: skipping {folder / 'broken.mp4'}: " in err
    assert "UserWarning" not in err and "return VideoFolder" not in err  # no Python source line for a user's file
    import warnings

    assert warnings.showwarning.__module__ != "lapa_learning.cli"  # main put Python's printer back


def test_frame_pairs_from_episode_dataset(generated):
    ds = EpisodeDataset(generated)
    pairs = FramePairDataset(ds, offset_seconds=0.1, image_size=32, augment=True)
    assert pairs.offset == 8
    assert len(pairs) == sum(ep.length - 8 for ep in ds.episodes)
    item = pairs[5]
    assert item["frames"].shape == (2, 3, 32, 32) and 0.0 <= item["frames"].min() <= item["frames"].max() <= 1.0
    plain = FramePairDataset(ds, offset_frames=8, image_size=64, episodes=[1])
    ep, t = plain.pairs[3]
    expected = ds.frames(1)[[t, t + 8]].astype(np.float32) / 255
    np.testing.assert_allclose(plain[3]["frames"].permute(0, 2, 3, 1).numpy(), expected, atol=1e-6)
    with pytest.raises(ValueError, match="exactly one"):
        FramePairDataset(ds, offset_frames=3, offset_seconds=0.1)


def test_split_episodes_is_disjoint_and_deterministic():
    train, val = split_episodes(10, 0.2, seed=1)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == list(range(10))
    assert split_episodes(10, 0.2, seed=1) == (train, val)
    assert split_episodes(2, 0.1)[1]  # at least one held-out episode when asked for any


def test_cli_generate_and_info(tmp_path):
    env = dict(os.environ)
    out = tmp_path / "cli"
    run = lambda *a: subprocess.run([sys.executable, "-m", "lapa_learning.cli", *a], capture_output=True,  # noqa
                                    text=True, env=env)
    res = run("data", "generate", "--out", str(out), "--tasks", "push-v3", "--episodes-per-task", "1",
              "--max-steps", "20")
    assert res.returncode == 0, res.stderr
    assert "1 episodes" in res.stdout and str(out.resolve()) in res.stdout
    res = run("data", "generate", "--out", str(out), "--tasks", "push-v3", "--episodes-per-task", "1")
    assert res.returncode == 2 and "already exists" in res.stderr and "Traceback" not in res.stderr
    res = run("data", "generate", "--out", str(tmp_path / "x"), "--tasks", "fly-v3")
    assert res.returncode == 2 and "unknown Meta-World task" in res.stderr
    res = run("data", "info", str(out))
    assert res.returncode == 0 and "push-v3: 1 episodes" in res.stdout


def _lerobot_shapes_ok(stats: dict, video_key: str) -> None:
    """The checks LeRobot 0.3.3's aggregate_stats makes on every episode's statistics before it opens a dataset."""
    for feature, values in stats.items():
        for key, value in values.items():
            shape = np.shape(value)
            assert len(shape) >= 1, f"{feature}.{key} is 0-dim"
            if key == "count":
                assert shape == (1,), f"{feature}.count has shape {shape}"
            elif feature == video_key:
                assert shape == (3, 1, 1), f"{feature}.{key} has shape {shape}"


def test_episode_stats_timestamps_and_fps_follow_lerobot(tmp_path, rng):
    root = tmp_path / "ds"
    frames, actions = _random_episode(rng)
    states = rng.uniform(-1, 1, (len(frames), 3)).astype(np.float32)
    measured = np.array([0.0, 0.09, 0.21, 0.3, 0.52, 0.6])  # a recorder's jittery sample times, with a gap
    with EpisodeWriter(root, fps=10, image_size=(16, 16), action_names=("a", "b"), state_names=("x", "y", "z"),
                       video_key="observation.images.top") as writer:
        writer.add_episode(frames, "first", actions=actions, states=states, timestamps=measured)
        writer.add_episode(frames[:4], "second", actions=actions[:4], states=states[:4])
    info = json.loads((root / "meta/info.json").read_text())
    assert info["fps"] == 10 and isinstance(info["fps"], int)  # LeRobot writes an integer fps
    rows = [json.loads(line) for line in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    ds = EpisodeDataset(root)
    assert ds.fps == 10.0
    for row, length in zip(rows, (6, 4)):
        stats = row["stats"]
        assert set(stats) == {"action", "observation.state", "timestamp", "frame_index", "episode_index", "index",
                              "task_index", "next.done", "observation.images.top"}
        _lerobot_shapes_ok(stats, "observation.images.top")
        assert all(values["count"] == [length] for values in stats.values())
    # each frame's time is its video frame's (frame_index / fps), whatever times the recorder measured
    np.testing.assert_allclose(ds.timestamps(0), np.arange(6) / 10, atol=1e-6)
    image = rows[0]["stats"]["observation.images.top"]
    decoded = ds.frames(0).astype(np.float64) / 255  # the stats are of the frames given, before compression
    np.testing.assert_allclose(np.ravel(image["mean"]), frames.reshape(-1, 3).mean(0) / 255, atol=1e-9)
    np.testing.assert_allclose(np.ravel(image["std"]), frames.reshape(-1, 3).std(0) / 255, atol=1e-9)
    np.testing.assert_allclose(np.ravel(image["mean"]), decoded.reshape(-1, 3).mean(0), atol=0.02)
    assert np.ravel(image["max"]).tolist() == (frames.reshape(-1, 3).max(0) / 255).tolist()
    np.testing.assert_allclose(rows[1]["stats"]["index"]["min"], [6])  # global frame index
    np.testing.assert_allclose(rows[0]["stats"]["action"]["mean"], actions.mean(0), atol=1e-6)


def test_a_lerobot_hub_style_info_json_opens(tmp_path, rng, capsys):
    """LeRobot's own datasets name vector dimensions as {"motors": [...]} or not at all, and have no
    meta/stats.json and no `lapa` entry: the names come out one per dimension and the statistics are computed."""
    root = tmp_path / "hub"
    frames, actions = _random_episode(rng)
    with EpisodeWriter(root, fps=10, image_size=(16, 16), action_names=("a", "b"),
                       state_names=("x", "y", "z")) as writer:
        writer.add_episode(frames, "push the block", actions=actions, states=np.zeros((len(frames), 3), np.float32))
    info_path = root / "meta/info.json"
    info = json.loads(info_path.read_text())
    info.pop("lapa")
    info["features"]["action"]["names"] = {"motors": ["motor_0", "motor_1"]}
    info["features"]["observation.state"]["names"] = None
    info_path.write_text(json.dumps(info))
    (root / "meta/stats.json").unlink()
    ds = EpisodeDataset(root)
    assert ds.action_names == ("motor_0", "motor_1")
    assert ds.state_names == ("observation.state_0", "observation.state_1", "observation.state_2")
    np.testing.assert_allclose(ds.actions(0), actions)
    assert ds.action_stats()["count"] == len(frames) and (root / "meta/stats.json").is_file()  # recomputed
    from lapa_learning.cli import main

    info["features"]["observation.images.wrist"] = dict(info["features"]["observation.images.front"])
    info_path.write_text(json.dumps(info))
    assert main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "camera read: observation.images.front (not read: observation.images.wrist)" in out, out
    assert "action  motor_0" in out
    info["features"]["action"]["names"] = {"arm": ["x", "y", "z"], "gripper": ["g"]}
    info_path.write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"feature 'action' has shape \[2\] but 4 names"):
        EpisodeDataset(root)


def test_old_layout_dataset_still_opens_and_appends(tmp_path, rng):
    """A dataset written before the LeRobot check (0-dim counts, action-only episode stats, float fps, measured
    sample times as timestamps) opens unchanged; appending to it gives every episode LeRobot-shaped stats."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "old"
    frames, actions = _random_episode(rng)
    with EpisodeWriter(root, fps=10, image_size=(16, 16), action_names=("a", "b")) as writer:
        writer.add_episode(frames, "first", actions=actions)
    # turn it into the old layout, as the writer of before left it
    info = json.loads((root / "meta/info.json").read_text())
    info["fps"] = 10.0
    (root / "meta/info.json").write_text(json.dumps(info))
    old_stats = {"action": {"min": actions.min(0).tolist(), "max": actions.max(0).tolist(),
                            "mean": actions.mean(0).tolist(), "std": actions.std(0).tolist(), "count": 6}}
    (root / "meta/episodes_stats.jsonl").write_text(json.dumps({"episode_index": 0, "stats": old_stats}) + "\n")
    parquet = root / "data/chunk-000/episode_000000.parquet"
    table = pq.read_table(parquet)
    measured = np.array([0.0, 0.09, 0.21, 0.3, 0.52, 0.6], dtype=np.float32)
    table = table.set_column(table.column_names.index("timestamp"), "timestamp", pa.array(measured))
    pq.write_table(table, parquet)

    ds = EpisodeDataset(root)
    assert ds.fps == 10.0 and ds.num_episodes == 1 and ds.frames(0).shape == (6, 16, 16, 3)
    np.testing.assert_allclose(ds.actions(0), actions)
    np.testing.assert_allclose(ds.timestamps(0), measured)  # old data is read as it is
    assert ds.action_stats()["count"] == 6

    with EpisodeWriter(root, fps=10, image_size=(16, 16), action_names=("a", "b"), mode="append") as writer:
        writer.add_episode(frames, "second", actions=actions)
    rows = [json.loads(line) for line in (root / "meta/episodes_stats.jsonl").read_text().splitlines()]
    assert [r["episode_index"] for r in rows] == [0, 1]
    assert rows[0]["stats"]["action"]["count"] == [6]
    assert rows[0]["stats"]["action"]["mean"] == old_stats["action"]["mean"]
    for row in rows:
        _lerobot_shapes_ok(row["stats"], "observation.images.front")
    ds = EpisodeDataset(root)
    assert ds.num_episodes == 2 and json.loads((root / "meta/info.json").read_text())["fps"] == 10
    np.testing.assert_allclose(ds.timestamps(1), np.arange(6) / 10, atol=1e-6)


def test_instructions_come_from_task_index_when_episodes_jsonl_has_no_tasks(tmp_path):
    """LeRobot v2.1 sets made by other tools may leave `tasks` out of episodes.jsonl; the frames' task_index and
    meta/tasks.jsonl still name each episode's instruction. With neither, training warns (Policy.act refuses "")."""
    from lapa_learning.vla.data import build_action_samples

    root = tmp_path / "ds"
    w = EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",))
    for ins in ("pick up the cube", "stack the cube", "pick up the cube"):
        w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), ins, actions=np.zeros((3, 1), np.float32))
    w.close()
    path = root / "meta" / "episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "tasks"}) + "\n" for r in rows))
    assert [e.instruction for e in EpisodeDataset(root).episodes] == ["pick up the cube", "stack the cube",
                                                                       "pick up the cube"]
    (root / "meta" / "tasks.jsonl").unlink()
    assert [e.instruction for e in EpisodeDataset(root).episodes] == ["", "", ""]
    with pytest.warns(UserWarning, match="3 of 3 episodes have no instruction"):
        build_action_samples([root], 8, 1, 0.0, 0, False)


def test_unpadded_frame_numbers_and_a_spreadsheet_csv(tmp_path):
    """Frames 0.png .. 11.png are read in number order (not 0, 1, 10, 11, 2, ...), and instructions.csv saved by
    a spreadsheet (a UTF-8 byte-order mark, spaces in the header) is read."""
    import cv2

    clip = tmp_path / "videos" / "clip"
    clip.mkdir(parents=True)
    for i in range(12):
        cv2.imwrite(str(clip / f"{i}.png"), np.full((8, 8, 3), 20 * i, np.uint8))
    (tmp_path / "videos" / "instructions.csv").write_bytes("\ufeffvideo, instruction\nclip,wave the arm\n"
                                                           .encode("utf-8"))
    source = VideoFolder(tmp_path / "videos", fps=10)
    assert source.episodes[0].instruction == "wave the arm"
    assert list(source.frames(0)[:, 0, 0, 0]) == [20 * i for i in range(12)]


def test_another_tools_stats_json_is_never_overwritten(tmp_path):
    """LeRobot v2.0 keeps its statistics (per camera too) in meta/stats.json: reading action statistics computes
    lapa's in memory and leaves the file as it is; lapa's own stale file is refreshed."""
    root = tmp_path / "ds"
    w = EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",))
    w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "wave", actions=np.arange(3, dtype=np.float32)[:, None])
    w.close()
    theirs = json.dumps({"action": {"mean": [9.0]}, "observation.images.front": {"mean": [[[0.5]]]}})
    (root / "meta" / "stats.json").write_text(theirs)
    assert EpisodeDataset(root).action_stats()["mean"] == pytest.approx([1.0])
    assert (root / "meta" / "stats.json").read_text() == theirs
    (root / "meta" / "stats.json").write_text(json.dumps({"total_frames": 99, "action": {"mean": [9.0]}}))
    assert EpisodeDataset(root).action_stats()["mean"] == pytest.approx([1.0])
    assert json.loads((root / "meta" / "stats.json").read_text())["total_frames"] == 3


def test_one_writer_per_dataset_at_a_time_and_clear_errors_for_bad_roots(tmp_path):
    """A second writer (another process, or the same one) would number its episodes like the first and one set
    would vanish: it is refused until the first closes. A file or an uncreatable path is a DatasetError."""
    first = EpisodeWriter(tmp_path / "ds", fps=10, image_size=(8, 8), action_names=("a",))
    with pytest.raises(DatasetError, match="is being written by another writer"):
        EpisodeWriter(tmp_path / "ds", fps=10, image_size=(8, 8), action_names=("a",), mode="append")
    first.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "wave", actions=np.zeros((3, 1), np.float32))
    first.close()
    second = EpisodeWriter(tmp_path / "ds", fps=10, image_size=(8, 8), action_names=("a",), mode="append")
    assert second.num_episodes == 1
    second.close()
    (tmp_path / "afile").write_text("x")
    for bad in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        with pytest.raises(DatasetError, match="cannot be a dataset directory"):
            EpisodeWriter(bad, fps=10, image_size=(8, 8), action_names=("a",))
    assert (tmp_path / "afile").read_text() == "x"


def test_video_folder_ignores_hidden_entries_and_refuses_bad_instruction_rows(tmp_path, rng):
    folder = tmp_path / "videos"
    (folder / ".latent_actions.partial").mkdir(parents=True)  # lapa's own resume folder, a .DS_Store, ...
    write_video(folder / "a.mp4", rng.integers(0, 255, (6, 16, 16, 3), dtype=np.uint8), fps=10)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped, nothing to warn about
        assert VideoFolder(folder, fps=10).num_episodes == 1
    for text, match in (('5\n', "row 1 needs the keys 'video' and 'instruction', got 5"),
                        ('{"video": "a.mp4", "instruction": null}\n', "instruction must be a non-empty string"),):
        (folder / "instructions.jsonl").write_text(text)
        with pytest.raises(DatasetError, match=match):
            VideoFolder(folder, fps=10)
    (folder / "instructions.jsonl").write_text('{"video": "a.mp4", "instruction": "wave"}\n', encoding="utf-16")
    with pytest.raises(DatasetError, match="is not UTF-8 text"):
        VideoFolder(folder, fps=10)


def test_damaged_metadata_is_a_clear_error_and_an_empty_dataset_has_info(tmp_path, capsys):
    from lapa_learning.cli import main

    root = tmp_path / "ds"
    with EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",)):
        pass
    assert main(["data", "info", str(root)]) == 0  # no episode yet: no statistics, no KeyError
    info = (root / "meta" / "info.json").read_text()
    for damage, match in ((b"\xff\xfe\x00garbage", "not UTF-8 JSON"), (b"[]", "expected a JSON object"),
                          (json.dumps({**json.loads(info), "fps": None}).encode(), "'fps' must be a positive")):
        (root / "meta" / "info.json").write_bytes(damage)
        with pytest.raises(DatasetError, match=match):
            EpisodeDataset(root)
    (root / "meta" / "info.json").write_text(info)
    (root / "meta" / "episodes.jsonl").write_text('{"episode_index": 0}\n')
    assert main(["data", "info", str(root)]) == 2
    assert "lacks or garbles 'episode_index' / 'length'" in capsys.readouterr().err


def test_overwrite_replaces_the_dataset_and_keeps_the_users_own_files(tmp_path):
    root = tmp_path / "ds"
    with EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",)) as w:
        w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "wave", actions=np.zeros((3, 1), np.float32))
    (root / "latent_actions.parquet").write_bytes(b"labels of the old episodes")
    (root / "NOTES.md").write_text("the user's")
    with EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), mode="overwrite"):
        pass
    assert EpisodeDataset(root).num_episodes == 0 and not (root / "latent_actions.parquet").exists()
    assert (root / "NOTES.md").read_text() == "the user's"


def test_a_filesystem_without_locks_writes_with_a_warning_not_a_false_refusal(tmp_path, monkeypatch):
    """NFS refuses some locks (EBADF, ENOLCK): that is not "another writer"; the writer warns and writes."""
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.warns(UserWarning, match="cannot lock"):
        w = EpisodeWriter(tmp_path / "ds", fps=10, image_size=(8, 8), action_names=("a",))
    w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "wave", actions=np.zeros((3, 1), np.float32))
    w.close()
    assert EpisodeDataset(tmp_path / "ds").num_episodes == 1


def test_a_lock_file_left_by_a_writer_that_failed_early_does_not_block_the_next(tmp_path):
    (tmp_path / "ds" / "meta").mkdir(parents=True)
    (tmp_path / "ds" / "meta" / ".writer.lock").write_text("")  # e.g. the disk was full before info.json
    with EpisodeWriter(tmp_path / "ds", fps=10, image_size=(8, 8), action_names=("a",)) as w:
        w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "wave", actions=np.zeros((3, 1), np.float32))
    assert EpisodeDataset(tmp_path / "ds").num_episodes == 1


def _small_set(root, episodes=3, length=4, **kwargs):
    rng = np.random.default_rng(0)
    with EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), **kwargs) as w:
        for i in range(episodes):
            w.add_episode(rng.integers(0, 255, (length, 8, 8, 3), dtype=np.uint8), f"task {i}",
                          actions=rng.uniform(-1, 1, (length, 1)))
    return root


def test_appending_to_a_set_with_an_episode_taken_out_keeps_every_file_and_numbers_after_the_highest(tmp_path):
    import pyarrow.parquet as pq

    root = _small_set(tmp_path / "ds")
    episodes = root / "meta" / "episodes.jsonl"
    rows = episodes.read_text().splitlines()
    episodes.write_text(rows[0] + "\n" + rows[2] + "\n")  # the user took episode 1 out
    kept = EpisodeDataset(root).frames(2)
    with EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), mode="append") as w:
        assert w.add_episode(np.zeros((5, 8, 8, 3), np.uint8), "new", actions=np.zeros((5, 1))) == 3
    ds = EpisodeDataset(root)
    assert [ep.index for ep in ds.episodes] == [0, 2, 3]
    assert np.array_equal(ds.frames(2), kept) and len(ds.frames(3)) == 5
    assert (root / "data" / "chunk-000" / "episode_000001.parquet").exists()  # the user's to delete, not ours
    new_index = pq.read_table(root / "data" / "chunk-000" / "episode_000003.parquet").column("index").to_pylist()
    assert new_index[0] == 12  # after episode 2's frames (8..11), not reusing them
    assert json.loads((root / "meta" / "info.json").read_text())["total_episodes"] == 3


def test_appending_is_refused_where_the_dataset_has_features_the_writer_would_drop(tmp_path):
    root = _small_set(tmp_path / "ds", episodes=1)
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info["features"]["observation.effort"] = {"dtype": "float32", "shape": [2], "names": ["e0", "e1"]}
    info_path.write_text(json.dumps(info))
    with pytest.raises(DatasetError, match=r"features that lapa does not write: dataset has \('observation.effort',\)"):
        EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), mode="append")
    assert "observation.effort" in json.loads(info_path.read_text())["features"]


def test_appending_to_episode_rows_without_tasks(tmp_path):
    """LeRobot rows may leave the task to the parquet files' task_index (the reader supports it)."""
    root = _small_set(tmp_path / "ds", episodes=2)
    episodes = root / "meta" / "episodes.jsonl"
    episodes.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "tasks"}) + "\n"
                                for line in episodes.read_text().splitlines()))
    with EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), mode="append") as w:
        w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "new", actions=np.zeros((3, 1)))
    assert EpisodeDataset(root).num_episodes == 3


def test_a_failed_or_killed_overwrite_gives_the_old_dataset_back_and_close_makes_it_final(tmp_path):
    root = _small_set(tmp_path / "ds", episodes=2)
    (root / "latent_actions.parquet").write_bytes(b"labels of the old episodes")
    before = EpisodeDataset(root).frames(1)

    def intact():
        ds = EpisodeDataset(root)
        return ds.num_episodes == 2 and np.array_equal(ds.frames(1), before) and \
            (root / "latent_actions.parquet").exists() and not list(root.glob(".replaced*"))

    with pytest.warns(UserWarning, match="did not finish; the dataset it was replacing is back"):
        with pytest.raises(RuntimeError, match="bag 2 unreadable"):
            with EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), mode="overwrite") as w:
                w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "new", actions=np.zeros((3, 1)))
                raise RuntimeError("bag 2 unreadable")
    assert intact()

    w = EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), mode="overwrite")
    w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "new", actions=np.zeros((3, 1)))
    w._unlock()  # killed: its lock goes with the process, nothing else runs
    with pytest.warns(UserWarning, match="did not finish"):  # the next writer puts the old one back first
        EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), mode="append").close()
    assert intact()

    partial = root / ".replaced.partial"  # killed while setting the old dataset aside: half of it moved
    (partial / "meta").mkdir(parents=True)
    (root / "data").rename(partial / "data")
    (root / "meta" / "info.json").rename(partial / "meta" / "info.json")
    with pytest.warns(UserWarning, match="did not finish"):
        EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), mode="append").close()
    assert intact()

    with EpisodeWriter(root, fps=10, image_size=(8, 8), action_names=("a",), mode="overwrite") as w:
        w.add_episode(np.zeros((3, 8, 8, 3), np.uint8), "new", actions=np.zeros((3, 1)))
    ds = EpisodeDataset(root)
    assert ds.num_episodes == 1 and not (root / "latent_actions.parquet").exists()
    assert not list(root.glob(".replaced*"))


def test_a_fractional_fps_is_the_videos_rate_too(tmp_path):
    import av

    root = tmp_path / "ds"
    with EpisodeWriter(root, fps=7.5, image_size=(8, 8), action_names=("a",)) as w:
        w.add_episode(np.zeros((4, 8, 8, 3), np.uint8), "wave", actions=np.zeros((4, 1)))
    with av.open(str(next((root / "videos").rglob("*.mp4")))) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate  # (read while the container is open: PyAV 18.1.1 refuses it after)
        times = [float(frame.pts * frame.time_base) for frame in container.decode(stream)]
    assert rate == 7.5 and np.allclose(times, np.arange(4) / 7.5)
    assert np.allclose(EpisodeDataset(root).timestamps(0), np.arange(4) / 7.5)
