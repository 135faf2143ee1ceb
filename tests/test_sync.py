"""As-of sampling and the twist <-> action mapping shared by the recorder node and the bag importer."""

import math

import numpy as np
import pytest

from lapa_learning.data.sync import AsOfSampler, TwistActionMap, sample_times
from lapa_learning.errors import ConfigError


def test_as_of_takes_newest_at_or_before_and_never_the_future():
    s = AsOfSampler(["image", "twist"], max_age=0.5)
    s.add("image", 1.0, "img1")
    s.add("twist", 0.9, "tw0.9")
    s.add("twist", 1.2, "tw1.2")  # after the sample time below: must not be used
    assert s.sample(1.1) == {"image": "img1", "twist": "tw0.9"}
    assert s.sample(1.2) == {"image": "img1", "twist": "tw1.2"}


def test_out_of_order_arrivals_are_sorted():
    s = AsOfSampler(["a"], max_age=1.0)
    for t in (3.0, 1.0, 2.0):
        s.add("a", t, t)
    assert s.sample(2.5) == {"a": 2.0}
    assert s.sample(1.5) == {"a": 1.0}


def test_stale_and_missing_streams_drop_the_frame_and_are_counted():
    s = AsOfSampler(["image", "twist"], max_age={"image": 0.1, "twist": 0.2})
    assert s.sample(0.0) is None  # nothing yet
    assert s.dropped == {"image": 1, "twist": 1}
    s.add("image", 1.0, "i")
    s.add("twist", 0.7, "t")
    assert s.sample(1.05) is None  # twist 0.35 s old > 0.2
    assert s.dropped == {"image": 1, "twist": 2}
    s.add("twist", 1.0, "t2")
    assert s.sample(1.05) == {"image": "i", "twist": "t2"}
    assert s.sample(1.5) is None  # both stale now
    assert s.dropped == {"image": 2, "twist": 3} and s.sampled == 1


def test_hold_forever_and_defaults():
    s = AsOfSampler(["image", "gripper"], max_age={"image": 0.1, "gripper": math.inf}, defaults={"gripper": -1.0})
    s.add("image", 0.0, "i0")
    assert s.sample(0.05) == {"image": "i0", "gripper": -1.0}  # default before any gripper command
    s.add("gripper", 0.06, 1.0)
    s.add("image", 100.0, "i1")
    assert s.sample(100.0) == {"image": "i1", "gripper": 1.0}  # held for 100 s


def test_history_is_pruned_but_keeps_the_as_of_match():
    s = AsOfSampler(["a"], max_age=1.0, horizon=2.0)
    for i in range(1000):
        s.add("a", i * 0.01, i)
    assert len(s._streams["a"].stamps) < 220
    assert s.sample(9.995) == {"a": 999}


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), "x"])
def test_bad_max_age_is_rejected(bad):
    with pytest.raises(ConfigError, match="max_age"):
        AsOfSampler(["a"], max_age=bad)


def test_missing_max_age_entry_and_unknown_stream():
    with pytest.raises(ConfigError, match="no entry"):
        AsOfSampler(["a", "b"], max_age={"a": 0.1})
    s = AsOfSampler(["a"])
    with pytest.raises(KeyError, match="unknown stream"):
        s.add("b", 0.0, 1)


def test_sample_times():
    t = sample_times(1.0, 2.0, 10.0)
    assert len(t) == 11 and t[0] == 1.0 and abs(t[-1] - 2.0) < 1e-9
    assert len(sample_times(2.0, 1.0, 10.0)) == 0
    with pytest.raises(ConfigError, match="rate"):
        sample_times(0, 1, 0)


def test_twist_action_map_round_trip_4d_and_7d():
    m = TwistActionMap(("dx", "dy", "dz", "gripper"), linear_scale=0.8)
    lin, ang, g = m.to_twist([0.5, -0.25, 1.0, 1.0])
    np.testing.assert_allclose(lin, [0.4, -0.2, 0.8])
    np.testing.assert_allclose(ang, 0.0)
    assert g == 1.0
    np.testing.assert_allclose(m.to_action(lin, ang, g), [0.5, -0.25, 1.0, 1.0], atol=1e-6)

    m7 = TwistActionMap(("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"), 0.1, 0.5)
    a = np.array([0.1, 0.2, 0.3, -0.4, 0.5, -0.6, -1.0], dtype=np.float32)
    lin, ang, g = m7.to_twist(a)
    np.testing.assert_allclose(ang, [-0.2, 0.25, -0.3])
    np.testing.assert_allclose(m7.to_action(lin, ang, g), a, atol=1e-6)


def test_twist_action_map_clips_and_validates():
    m = TwistActionMap(linear_scale=0.8, action_limit=1.0)
    np.testing.assert_allclose(m.to_action([8.0, -8.0, 0.0], [0, 0, 0], None), [1.0, -1.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="unknown entries"):
        TwistActionMap(("a0", "gripper"))
    with pytest.raises(ConfigError, match="linear_scale"):
        TwistActionMap(linear_scale=0.0)
    with pytest.raises(ValueError, match="expected 4"):
        m.to_twist([0.0, 0.0])
