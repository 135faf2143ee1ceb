import json

import numpy as np
import pytest

from lapa_learning.laq.explain import explain
from lapa_learning.laq.probe import episode_folds, mean_action_per_code, one_hot, probe, r2_score
from lapa_learning.laq.testing import tiny_train_config, write_dataset
from lapa_learning.laq.trainer import train


def test_explain_smoke(tmp_path):
    data = write_dataset(tmp_path / "ds", episodes=6, length=10, with_actions=True)
    train(tiny_train_config(max_steps=2), data, tmp_path / "run", progress=False)
    result = explain(tmp_path / "run", data, out=tmp_path / "ex", n_frames=2, top=4, device="cpu")
    grid = tmp_path / "ex" / "laq_explain.png"
    assert grid.is_file() and grid.stat().st_size < 500_000
    assert (tmp_path / "ex" / "laq_probe.png").is_file()
    summary = json.loads((tmp_path / "ex" / "laq_explain.json").read_text())
    assert summary["pairs"] == 6 * 8 and len(summary["examples"]) == 2
    p = summary["probe"]
    assert len(p["r2_action"]) == 4
    assert p["r2_action"][2] is None  # dz is constant in this data: R^2 undefined, written as null
    assert np.array(p["mean_action_per_code"], dtype=float).shape == (4, 8, 4)
    assert result["files"]["grid"] == str(grid)


def test_action_free_data_skips_the_probe(tmp_path):
    data = write_dataset(tmp_path / "ds", episodes=4, length=10, with_actions=False)
    train(tiny_train_config(max_steps=1), data, tmp_path / "run", progress=False)
    result = explain(tmp_path / "run", data, out=tmp_path / "ex", n_frames=1, top=2, device="cpu")
    assert "probe" not in result and "probe_plot" not in result["files"]


def test_probe_recovers_a_token_coded_target():
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 4, size=(400, 2))
    effect = np.array([[-1.0, 0.0, 1.0, 2.0], [0.5, 0.0, -0.5, 0.0]])  # position k, code c -> target
    y = (effect[0][tokens[:, 0]] + effect[1][tokens[:, 1]])[:, None] + 0.01 * rng.normal(size=(400, 1))
    episode = np.arange(400) // 20
    folds = episode_folds(episode, 5)
    assert sorted(sum(folds, [])) == list(range(20))
    res = probe(tokens, episode, y, 4, folds, ridge=1e-3)
    assert res["r2_linear"][0] > 0.99 and res["r2_lookup"][0] > 0.99
    noise = probe(tokens, episode, rng.normal(size=(400, 1)), 4, folds, ridge=1e-3)
    assert noise["r2_linear"][0] < 0.1
    means, counts = mean_action_per_code(tokens, y, 4)
    assert counts.sum() == 800 and means[0, 3, 0] > means[0, 0, 0]


def test_helpers():
    assert one_hot(np.array([[1, 0]]), 3).tolist() == [[0, 1, 0, 1, 0, 0]]
    y = np.array([[1.0, 2.0], [3.0, 2.0]])
    r2 = r2_score(y, y)
    assert r2[0] == pytest.approx(1.0) and np.isnan(r2[1])


def test_out_naming_a_file_is_one_clear_error(tmp_path):
    from lapa_learning.errors import ConfigError

    data = write_dataset(tmp_path / "ds", episodes=4, length=10, with_actions=False)
    train(tiny_train_config(max_steps=1), data, tmp_path / "run", progress=False)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="--out .*afile is a file; name a folder"):
        explain(tmp_path / "run", data, out=afile, n_frames=1, top=2, device="cpu")


def test_a_broken_episode_is_skipped_and_one_episode_cannot_be_probed(tmp_path):
    """As training and labelling do, explain skips an episode whose video is cut; a probe over one episode is
    one clear error that names --no-probe."""
    from lapa_learning.errors import ConfigError

    data = write_dataset(tmp_path / "ds", episodes=5, length=10, with_actions=True)
    train(tiny_train_config(max_steps=1), data, tmp_path / "run", progress=False)
    video = next(data.glob("videos/**/episode_000002.mp4"))
    video.write_bytes(video.read_bytes()[:200])
    with pytest.warns(UserWarning, match="skipping episode 2"):
        result = explain(tmp_path / "run", data, out=tmp_path / "ex", n_frames=1, top=2, device="cpu")
    assert result["summary"]["pairs"] == 4 * 8 and "probe" in result
    one = write_dataset(tmp_path / "one", episodes=1, length=10, with_actions=True)
    with pytest.raises(ConfigError, match="needs at least 2 episodes .* found 1; pass --no-probe"):
        explain(tmp_path / "run", one, out=tmp_path / "ex1", n_frames=1, top=2, device="cpu")
    assert "probe" not in explain(tmp_path / "run", one, out=tmp_path / "ex2", n_frames=1, top=2, device="cpu",
                                  probe_actions=False)
