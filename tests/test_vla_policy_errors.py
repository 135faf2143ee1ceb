"""Policy and model errors: long instructions, invalid LM/vision configs, bad train_record.json, bad API arguments."""

import json
import shutil
import warnings

import numpy as np
import pytest

from lapa_learning.errors import CheckpointError, ConfigError, InputError
from lapa_learning.vla.policy import Policy
from lapa_learning.vla.testing import make_tiny_checkpoint


@pytest.fixture(scope="module")
def chunk_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("vla") / "chunk", chunk_size=4, latent=False)


@pytest.fixture(scope="module")
def policy(chunk_ckpt):
    return Policy.load(chunk_ckpt, device="cpu")


def _rebuild(pol, **kw):
    return Policy(pol.model, pol.tokenizer, pol.actions, pol.meta, kw.pop("record", pol.record), pol.checkpoint_dir,
                  "cpu", **kw)


def test_long_instructions_keep_their_start_with_one_warning_each(policy):
    from lapa_learning.vla.processor_vla import encode_prompts

    cfg = policy.model.config
    tail = " mug from the drying rack next to the sink and put it on the top shelf of the cupboard, then wave"
    red, blue = "take the red" + tail, "take the blue" + tail
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ids, mask = encode_prompts(policy.tokenizer, cfg.prompt_template, [red, blue], cfg.language.max_text_tokens)
        for _ in range(3):  # a robot at 10+ Hz: no more warnings
            policy.act_batch([np.zeros((64, 64, 3), np.uint8)] * 2, [red, blue], envs=["r", "b"])
    assert ids.shape[1] == cfg.language.max_text_tokens and mask.all()
    assert not np.array_equal(ids[0], ids[1])  # red and blue stay apart: the end is cut, not the start
    assert policy.tokenizer.decode(ids[0], skip_special_tokens=True).startswith(
        "What action should the robot take to take the red mug")
    texts = [str(w.message) for w in caught]
    assert len(texts) == 2 and all(f"kept the first {cfg.language.max_text_tokens - 1}" in t for t in texts)
    assert repr(red) in texts[0] and repr(blue) in texts[1]


def test_invalid_lm_and_vision_configs_in_a_config_file(tmp_path):
    from lapa_learning.vla.configuration_vla import load_config_arg
    from lapa_learning.vla.modeling_vla import VLAModel

    bad_lm = tmp_path / "lm.yaml"
    for overrides in ("hidden_size: 130", "num_attention_heads: 0"):  # (the overrides replace the preset's)
        bad_lm.write_text(f"base: tiny\nlanguage: {{overrides: {{{overrides}}}}}\n")
        with pytest.raises(ConfigError, match=r"language.overrides \(model_type 'llama'\): invalid model config"):
            VLAModel(load_config_arg(str(bad_lm)), vocab_size=300)
    bad_vision = tmp_path / "vision.yaml"
    bad_vision.write_text("base: tiny\nvision: {model_type: no_such_model}\n")
    with pytest.raises(ConfigError, match="vision.model_type 'no_such_model'.*siglip_vision_model") as err:
        VLAModel(load_config_arg(str(bad_vision)), vocab_size=300)
    assert len(str(err.value)) < 300  # not transformers' list of every model type


@pytest.mark.parametrize("where, value, match", [
    (("language", "hidden_size"), 130, "hf_configs.language: invalid model config"),
    (("language",), [1], "hf_configs.language: expected a mapping"),
    (("vision",), "x", "hf_configs.vision: expected a mapping"),
    ((), 5, "hf_configs: expected a mapping"),
])
def test_invalid_hf_configs_in_a_checkpoint(chunk_ckpt, tmp_path, where, value, match):
    d = tmp_path / "ck"
    shutil.copytree(chunk_ckpt, d)
    meta = json.loads((d / "config.json").read_text())
    parent, key = meta, "hf_configs"
    for k in where:
        parent, key = parent[key], k
    parent[key] = value
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=f"config.json: cannot rebuild the model.*{match}"):
        Policy.load(d, device="cpu")


def test_bad_train_record(policy):
    for record, match in [({"datasets": [{"action_scales": {"a": "x"}}]}, r"must map names to numbers.*'x'"),
                          ({"datasets": 5}, "'datasets': expected a list")]:
        with pytest.raises(CheckpointError, match=f"train_record.json: .*{match}"):
            _rebuild(policy, record=record)
    assert _rebuild(policy, record={"datasets": [{"action_scales": {"a": 2}}]}).action_scales == {"a": 2.0}


def test_replan_every_must_be_an_integer(policy):
    for bad in ("x", 2.7, True, 0, 5):
        with pytest.raises(ConfigError, match=r"replan_every\): expected an integer 1..chunk_size \(4\)"):
            _rebuild(policy, replan_every=bad)
    assert _rebuild(policy, replan_every=np.int64(2)).replan_every == 2


def test_act_batch_envs_must_be_a_list_of_ids(policy):
    img = np.zeros((64, 64, 3), np.uint8)
    from lapa_learning.vla.chunking import BlendedPolicy

    for envs in (5, [[0], [1]]):
        for pol in (policy, BlendedPolicy(policy, "ensemble", replan_every=1)):
            with pytest.raises(InputError, match="envs: expected a list of environment ids"):
                pol.act_batch([img, img], ["push", "push"], envs=envs)


def test_checkpoints_from_before_the_end_truncation_keep_cutting_the_start(policy):
    """They were trained on prompts that lost their start: they are given them so (tests/data/vla_heads pins the
    outputs: test_vla_policy's test_checkpoints_written_before_action_head_classes_...)."""
    from pathlib import Path

    old = Policy.load(Path(__file__).parent / "data" / "vla_heads" / "continuous", device="cpu")
    assert old.model.config.language.truncate == "start" and policy.model.config.language.truncate == "end"
