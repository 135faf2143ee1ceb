import numpy as np
import pytest

from lapa_learning.errors import CheckpointError
from lapa_learning.laq.label import PARTIAL_DIR, label_dataset
from lapa_learning.data.latent_labels import LatentLabels
from lapa_learning.laq.testing import tiny_train_config, write_dataset
from lapa_learning.laq.trainer import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("laq_label")
    data = write_dataset(root / "ds", episodes=5, length=10, with_actions=False)
    train(tiny_train_config(max_steps=2, val_fraction=0.2), data, root / "run", progress=False)
    return data, root / "run"


def test_label_every_pair(trained, tmp_path):
    data, run = trained
    result = label_dataset(run, data, progress=False, batch_size=3)
    assert result["pairs"] == 5 * (10 - 2) and result["episodes"] == 5 and result["offset"] == 2
    labels = LatentLabels.load(data)
    assert (labels.num_tokens, labels.codebook_size, labels.offset) == (4, 8, 2)
    assert sorted(set(labels.episode.tolist())) == [0, 1, 2, 3, 4]
    assert labels.t[labels.episode == 0].tolist() == list(range(8))
    assert not (data / PARTIAL_DIR).exists()
    # the same tokens come out of the model directly
    from lapa_learning.data import EpisodeDataset
    from lapa_learning.laq.checkpoint import load_laq
    from lapa_learning.laq.label import encode_episode

    model, _ = load_laq(run)
    _, tokens = encode_episode(model, EpisodeDataset(data).frames(3), 2, 100, "cpu")
    np.testing.assert_array_equal(tokens[5], labels.lookup(3, 5))


def test_a_second_labelling_of_the_same_dataset_at_once_is_refused(trained):
    """Two `laq label` runs (e.g. two checkpoints) at once mixed each other's partial results into one file."""
    import os

    from lapa_learning.errors import ConfigError
    from lapa_learning.io import try_exclusive_lock
    from lapa_learning.laq.label import LOCK_FILE

    data, run = trained
    held = try_exclusive_lock(data / LOCK_FILE)  # what a running labelling holds
    try:
        with pytest.raises(ConfigError, match="another `lapa laq label` is labelling it now"):
            label_dataset(run, data, progress=False)
    finally:
        os.close(held)
    assert label_dataset(run, data, progress=False)["episodes"] == 5  # free again: labels


def test_labelling_resumes_after_interruption(trained):
    data, run = trained
    with pytest.raises(KeyboardInterrupt):
        label_dataset(run, data, progress=False, _stop_after=2)
    assert len(list((data / PARTIAL_DIR).glob("episode_*.npz"))) == 2
    result = label_dataset(run, data, progress=False)
    assert (result["reused"], result["encoded"]) == (2, 3)
    assert len(LatentLabels.load(data)) == 40


def test_partial_results_of_another_offset_are_discarded(trained):
    data, run = trained
    with pytest.raises(KeyboardInterrupt):
        label_dataset(run, data, progress=False, _stop_after=2)
    result = label_dataset(run, data, progress=False, offset=3)
    assert result["reused"] == 0 and LatentLabels.load(data).offset == 3


def test_bad_checkpoint(trained, tmp_path):
    data, _ = trained
    with pytest.raises(CheckpointError):
        label_dataset(tmp_path / "missing", data, progress=False)


def test_train_and_label_a_video_folder(tmp_path):
    from lapa_learning.data.video import write_video
    from lapa_learning.laq.testing import moving_square_frames

    rng = np.random.default_rng(0)
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(4):
        write_video(folder / f"clip{i}.mp4", moving_square_frames(rng, length=10)[0], fps=10)
    run = tmp_path / "run"
    summary = train(tiny_train_config(max_steps=2, offset_frames=None, offset_seconds=0.2), folder, run,
                    progress=False, video_fps=10)
    assert summary["offset"] == 2  # 0.2 s at 10 fps
    result = label_dataset(run, folder, progress=False)  # the checkpoint's fps (10) is used for the folder
    assert result["offset"] == 2 and result["pairs"] == 4 * 8
    assert (folder / "latent_actions.parquet").is_file()


def test_labels_are_refused_for_videos_that_changed_and_warn_about_added_episodes(trained, tmp_path):
    """Latent labels are tied to episodes by index; a video folder's indices follow the sorted file names, so a
    video added in front would shift every label onto another clip. Such labels are refused; episodes appended to a
    dataset since labelling have no labels and are named in a warning."""
    import shutil

    from lapa_learning.data.video import write_video
    from lapa_learning.errors import DatasetError
    from lapa_learning.laq.testing import write_dataset
    from lapa_learning.vla.data import build_latent_samples

    _, run = trained
    rng = np.random.default_rng(0)
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("b.mp4", "c.mp4"):
        write_video(videos / name, rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), fps=10)
    (videos / "instructions.csv").write_text("video,instruction\nb.mp4,wave\nc.mp4,wave\na.mp4,wave\n")
    label_dataset(run, videos, progress=False, video_fps=10)
    assert LatentLabels.load(videos).episode_keys == {0: "b.mp4, 8 frames", 1: "c.mp4, 8 frames"}
    build_latent_samples([videos], 32, 0.0, 0, progress=False)  # unchanged: fine
    write_video(videos / "a.mp4", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8), fps=10)
    with pytest.raises(DatasetError, match=r"episode 0 was 'b.mp4, 8 frames' when labelled, is 'a.mp4, 8 frames' "
                                           r"now.*relabel it with `lapa laq label"):
        build_latent_samples([videos], 32, 0.0, 0, progress=False)

    data = write_dataset(tmp_path / "ds", episodes=3, length=10, with_actions=False)
    label_dataset(run, data, progress=False)
    shutil.copytree(data, tmp_path / "more")
    from lapa_learning.data import EpisodeWriter

    with EpisodeWriter(tmp_path / "more", fps=10, image_size=(32, 32), with_actions=False, mode="append") as w:
        for _ in range(2):
            w.add_episode(rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8), "push the block")
    with pytest.warns(UserWarning, match=r"2 of 5 episodes \(e.g. episode 3\) were added after labelling"):
        train_set, _, _ = build_latent_samples([tmp_path / "more"], 32, 0.0, 0, progress=False)
    assert len(train_set.frames) == 3


def test_a_broken_episode_video_is_skipped_with_a_warning(trained, tmp_path):
    """As training does: the other episodes are labelled, and a rerun is not stuck on it."""
    import shutil

    from lapa_learning.data import EpisodeDataset

    data, run = trained
    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    video = next(copy.glob("videos/**/episode_000002.mp4"))
    video.write_bytes(video.read_bytes()[:200])
    with pytest.warns(UserWarning, match="skipping episode 2"):
        result = label_dataset(run, copy, progress=False)
    assert result["episodes"] == 4
    assert sorted(set(LatentLabels.load(copy).episode.tolist())) == [0, 1, 3, 4]
    assert EpisodeDataset(copy).num_episodes == 5  # the dataset itself is untouched
