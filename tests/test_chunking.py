"""ChunkBlender: which chunk serves a step, temporal ensembling weights, prefetch timing, bad inputs."""

import numpy as np
import pytest

from lapa_learning.errors import ConfigError, InputError
from lapa_learning.vla.chunking import ChunkBlender


def chunk(value, t=4, a=2):
    return np.full((t, a), float(value))


def test_switch_uses_the_newest_chunk_and_drops_ended_ones():
    b = ChunkBlender(chunk_size=4, blend="switch", prefetch=1)
    assert b.action(0) is None and b.needs_chunk(0)
    b.add(0, np.arange(8.0).reshape(4, 2))
    np.testing.assert_array_equal(b.action(0), [0, 1])
    np.testing.assert_array_equal(b.action(3), [6, 7])
    b.add(2, chunk(9))  # predicted from step 2's observation, arrived later
    np.testing.assert_array_equal(b.action(3), [9, 9])
    np.testing.assert_array_equal(b.action(5), [9, 9])
    assert b.action(6) is None and len(b.chunks) == 0  # both ended


def test_ensemble_weights_fresher_predictions_more():
    b = ChunkBlender(chunk_size=4, blend="ensemble", decay=0.0)
    b.add(0, chunk(0))
    b.add(2, chunk(1))
    np.testing.assert_allclose(b.action(1), [0, 0])  # only the first covers step 1
    np.testing.assert_allclose(b.action(2), [0.5, 0.5])  # decay 0: plain mean
    b = ChunkBlender(chunk_size=4, blend="ensemble", decay=1.0)
    b.add(0, chunk(0))
    b.add(2, chunk(1))
    w_old, w_new = np.exp(-1.0 * 3), np.exp(-1.0 * 1)  # at step 3 the chunks looked 3 and 1 steps ahead
    np.testing.assert_allclose(b.action(3), [w_new / (w_old + w_new)] * 2)
    assert b.action(3)[0] > 0.5
    big = ChunkBlender(chunk_size=4, blend="ensemble", decay=50.0)
    big.add(0, chunk(0))
    big.add(2, chunk(1))
    np.testing.assert_allclose(big.action(3), [1, 1], atol=1e-12)  # a large decay is a switch


def test_remaining_and_prefetch_say_when_to_start_the_next_call():
    b = ChunkBlender(chunk_size=8, prefetch=3)
    b.add(10, chunk(0, t=8))
    assert [b.remaining(s) for s in (8, 10, 14, 15, 18, 30)] == [8, 8, 4, 3, 0, 0]
    assert not b.needs_chunk(14) and b.needs_chunk(15)
    b.reset()
    assert b.action(12) is None and b.remaining(12) == 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(chunk_size=0), "chunk_size"),
    (dict(chunk_size=4, blend="average"), "blend must be one of switch, ensemble"),
    (dict(chunk_size=4, decay=-1.0), "decay"),
    (dict(chunk_size=4, prefetch=4), r"prefetch must be in 0..chunk_size-1 \(3\)"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ChunkBlender(**kwargs)


def test_bad_chunks_are_named():
    b = ChunkBlender(chunk_size=4)
    with pytest.raises(InputError, match=r"expected shape \(4, A\), got \(3, 2\)"):
        b.add(0, np.zeros((3, 2)))
    b.add(5, chunk(0))
    with pytest.raises(InputError, match="older than the newest"):
        b.add(4, chunk(0))
