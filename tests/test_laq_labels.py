import numpy as np
import pytest

from lapa_learning.errors import DatasetError, InputError
from lapa_learning.data.latent_labels import FILE_NAME, LatentLabels, save_latent_labels


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    episode = np.array([1, 0, 0, 1, 2])
    t = np.array([0, 3, 0, 1, 0])
    tokens = rng.integers(0, 8, size=(5, 4))
    path = save_latent_labels(tmp_path, episode, t, tokens, codebook_size=8, offset=12, source="ckpt/x")
    assert path == tmp_path / FILE_NAME and path.is_file()
    labels = LatentLabels.load(tmp_path)
    assert (labels.num_tokens, labels.codebook_size, labels.offset, labels.source) == (4, 8, 12, "ckpt/x")
    assert len(labels) == 5
    # sorted by (episode, t)
    assert labels.episode.tolist() == [0, 0, 1, 1, 2] and labels.t.tolist() == [0, 3, 0, 1, 0]
    for e, s, tok in zip(episode, t, tokens):
        np.testing.assert_array_equal(labels.lookup(e, s), tok)
    with pytest.raises(KeyError):
        labels.lookup(0, 1)
    assert LatentLabels.load(path).num_tokens == 4  # the file path itself works too


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="tokens must lie"):
        save_latent_labels(tmp_path, [0], [0], [[8, 0]], codebook_size=8, offset=1, source="")
    with pytest.raises(InputError, match="shape"):
        save_latent_labels(tmp_path, [0, 1], [0], [[1]], codebook_size=8, offset=1, source="")
    with pytest.raises(InputError, match="more than once"):
        save_latent_labels(tmp_path, [0, 0], [2, 2], [[1], [2]], codebook_size=8, offset=1, source="")
    with pytest.raises(DatasetError, match="does not exist"):
        save_latent_labels(tmp_path / "nope", [0], [0], [[1]], codebook_size=8, offset=1, source="")


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(DatasetError, match=FILE_NAME):
        LatentLabels.load(tmp_path)
    (tmp_path / FILE_NAME).write_bytes(b"not a parquet file")
    with pytest.raises(DatasetError, match=FILE_NAME):
        LatentLabels.load(tmp_path)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"episode_index": [0]}), tmp_path / FILE_NAME)  # no metadata
    with pytest.raises(DatasetError, match="metadata"):
        LatentLabels.load(tmp_path)
