"""Policy contract: load, act, act_batch, chunk queue, input errors, checkpoint errors."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lapa_learning.errors import CheckpointError, ConfigError, InputError
from lapa_learning.vla.policy import Action, Policy
from lapa_learning.vla.testing import make_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("vla") / "tiny", action_dim=4, chunk_size=1, seed=0)


@pytest.fixture(scope="module")
def chunk_ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("vla") / "chunk", action_dim=7, chunk_size=4, seed=1)


@pytest.fixture(scope="module")
def policy(tiny_ckpt):
    return Policy.load(tiny_ckpt, device="cpu")


def _img(h=64, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_load_and_attributes(policy, tiny_ckpt):
    assert policy.action_names == ("dx", "dy", "dz", "gripper")
    assert policy.device == "cpu"
    assert policy.image_size == 64 and policy.chunk_size == 1
    assert policy.num_latent_tokens == 4 and policy.codebook_size == 8
    assert policy.name == "tiny" and policy.checkpoint_dir == tiny_ckpt
    for f in ("model.safetensors", "config.json", "tokenizer.json", "action_stats.json", "train_record.json"):
        assert (tiny_ckpt / f).is_file(), f


def test_act_types_and_any_image_size(policy):
    for h, w in [(64, 64), (224, 224), (48, 80), (480, 640)]:
        policy.reset()
        a = policy.act(_img(h, w), "push the puck to the goal")
        assert isinstance(a, Action)
        assert a.values.shape == (4,) and a.values.dtype == np.float32
        assert a.gripper == a.values[-1] and a.gripper in (-1.0, 1.0)
        assert a.latent_tokens.shape == (4,) and a.latent_tokens.dtype == np.int64
        assert ((a.latent_tokens >= 0) & (a.latent_tokens < 8)).all()
        assert a.chunk_index == 0


def test_deterministic_and_batch_matches_single(policy):
    imgs = np.stack([_img(seed=i) for i in range(3)])
    ins = ["push the puck to the goal and then some more words here", "open the door", "push"]
    batch = policy.act_batch(imgs, ins)
    for i in range(3):
        policy.reset()
        a = policy.act(imgs[i], ins[i])
        np.testing.assert_allclose(a.values, batch[i].values)
        np.testing.assert_array_equal(a.latent_tokens, batch[i].latent_tokens)


def test_a_continuous_chunk_in_a_batch_equals_it_alone_up_to_float_rounding(chunk_ckpt):
    """Batched evaluation with a continuous head can differ from the sequential run only through float rounding of
    the batched matrix products (the rows do not see each other): well under 1e-5 in normalised units."""
    pol = Policy.load(chunk_ckpt, device="cpu")
    imgs = np.stack([_img(seed=20 + i) for i in range(4)])
    ins = ["open the drawer", "push the puck to the goal and then some more words", "x", "open the drawer"]
    batch, _ = pol.predict_chunk(imgs, ins)
    for i in range(4):
        alone, _ = pol.predict_chunk(imgs[i:i + 1], ins[i:i + 1])
        np.testing.assert_allclose(alone[0], batch[i], rtol=0, atol=1e-5)


def test_chunk_queue_and_reset(chunk_ckpt):
    pol = Policy.load(chunk_ckpt, device="cpu")
    assert pol.chunk_size == 4 and pol.action_names[-1] == "gripper" and len(pol.action_names) == 7
    img = _img()
    idx = [pol.act(img, "open the drawer").chunk_index for _ in range(6)]
    assert idx == [0, 1, 2, 3, 0, 1]
    pol.reset()
    assert pol.act(img, "open the drawer").chunk_index == 0
    pol2 = Policy.load(chunk_ckpt, device="cpu", replan_every=2)
    assert [pol2.act(img, "x").chunk_index for _ in range(5)] == [0, 1, 0, 1, 0]
    with pytest.raises(ConfigError, match="replan_every"):
        Policy.load(chunk_ckpt, device="cpu", replan_every=5)


def test_no_image_needed_inside_a_chunk(chunk_ckpt, policy):
    pol = Policy.load(chunk_ckpt, device="cpu")
    img = _img()
    with pytest.raises(InputError, match="image: expected a numpy array"):
        pol.act(None, "open the drawer")  # a re-plan needs an image
    planned = []
    for step in range(8):
        assert pol.will_replan == (step % 4 == 0)
        planned.append(pol.act(img if pol.will_replan else None, "open the drawer").values)
    pol.reset()
    same = [pol.act(img, "open the drawer").values for _ in range(8)]  # an image every step: the same actions
    np.testing.assert_array_equal(np.stack(planned), np.stack(same))
    assert policy.will_replan  # chunk size 1: every act runs the model
    policy.act(img, "x")
    assert policy.will_replan


@pytest.mark.parametrize("image,match", [
    (np.zeros((64, 64), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((64, 64, 4), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((64, 64, 3), np.float32), "uint8"),
    (np.zeros((0, 64, 3), np.uint8), "empty"),
    ([[0, 0, 0]], "numpy array"),
])
def test_bad_images(policy, image, match):
    with pytest.raises(InputError, match=match):
        policy.act(image, "push the puck")


@pytest.mark.parametrize("instruction", ["", "   ", None, 3])
def test_bad_instructions(policy, instruction):
    with pytest.raises(InputError, match="instruction"):
        policy.act(_img(), instruction)


def test_bad_batches(policy):
    with pytest.raises(InputError, match="images"):
        policy.act_batch(_img(), ["a"])
    with pytest.raises(InputError, match="instructions"):
        policy.act_batch(np.stack([_img(), _img()]), ["a"])
    with pytest.raises(InputError, match=r"instructions\[1\]"):
        policy.act_batch(np.stack([_img(), _img()]), ["a", ""])


def _copy(src, tmp_path, name="ck"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        Policy.load(tmp_path / "nope")


def test_missing_files(tiny_ckpt, tmp_path):
    for f, match in [("model.safetensors", "model.safetensors: missing"), ("config.json", "config.json: missing"),
                     ("action_stats.json", "action_stats.json: missing")]:
        d = _copy(tiny_ckpt, tmp_path, f)
        (d / f).unlink()
        with pytest.raises(CheckpointError, match=match):
            Policy.load(d, device="cpu")


def test_truncated_weights(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path)
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Policy.load(d, device="cpu")


def test_bad_json(tiny_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path)
    (d / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        Policy.load(d, device="cpu")
    d2 = _copy(tiny_ckpt, tmp_path, "ck2")
    (d2 / "action_stats.json").write_text('{"names": ["a"]}')
    with pytest.raises(CheckpointError, match="action_stats.json"):
        Policy.load(d2, device="cpu")


def test_mismatched_checkpoint(tiny_ckpt, chunk_ckpt, tmp_path):
    d = _copy(tiny_ckpt, tmp_path)
    shutil.copy(chunk_ckpt / "model.safetensors", d / "model.safetensors")  # weights of another model
    with pytest.raises(CheckpointError, match="does not match"):
        Policy.load(d, device="cpu")
    d2 = _copy(tiny_ckpt, tmp_path, "ck2")
    meta = json.loads((d2 / "config.json").read_text())
    meta["vla"]["language"]["overrides"]["hidden_size"] = 64
    meta["hf_configs"]["language"]["hidden_size"] = 64
    (d2 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="does not match"):
        Policy.load(d2, device="cpu")
    d3 = _copy(tiny_ckpt, tmp_path, "ck3")
    meta = json.loads((d3 / "config.json").read_text())
    meta["vla"]["bogus_key"] = 1
    (d3 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="bogus_key"):
        Policy.load(d3, device="cpu")
    d4 = _copy(tiny_ckpt, tmp_path, "ck4")
    meta = json.loads((d4 / "config.json").read_text())
    meta["format"] = "lapa_idm"
    (d4 / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"not a LAPA VLA checkpoint \('lapa_vla'\) but VPT's inverse-dynamics"):
        Policy.load(d4, device="cpu")
    # a directory that is no checkpoint at all, and an LAQ run, say what a policy is
    with pytest.raises(CheckpointError, match=r"holds neither config.json nor checkpoint/config.json; expected the "
                                              r"--out of `lapa vla finetune`"):
        Policy.load(tmp_path, device="cpu")
    from lapa_learning.laq.testing import make_tiny_laq

    make_tiny_laq(tmp_path / "laq")
    with pytest.raises(CheckpointError, match=r"an LAQ run \(stage 1, `lapa laq train`\), not a VLA"):
        Policy.load(tmp_path / "laq", device="cpu")


def test_bad_device(tiny_ckpt, tmp_path):
    import torch

    with pytest.raises(ConfigError, match="device"):
        Policy.load(tiny_ckpt, device="tpu")
    assert Policy.load(tiny_ckpt, device="cpu:0").device == "cpu"
    if not torch.backends.mps.is_available():
        with pytest.raises(ConfigError, match="MPS is not available"):
            Policy.load(tiny_ckpt, device="mps")
    d = _copy(tiny_ckpt, tmp_path)
    meta = json.loads((d / "config.json").read_text())
    meta["format_version"] = "1"
    (d / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version '1': expected an integer"):
        Policy.load(d, device="cpu")


def test_parallel_branch_decoding_matches_sequential(tiny_ckpt):
    pol = Policy.load(tiny_ckpt, device="cpu")
    imgs = np.stack([_img(seed=i) for i in range(5)])
    ins = ["push the puck to the goal", "open the door", "x", "close the drawer quickly", "push"]
    fast = pol.act_batch(imgs, ins)
    pol.model.parallel_branches = False
    slow = pol.act_batch(imgs, ins)
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.latent_tokens, b.latent_tokens)


def _greedy_without_cache(model, pixels, ids, mask):
    """Reference decoding: every token re-runs the whole sequence (prefix + slots so far), no KV cache."""
    import torch

    prefix, pmask = model.embed_prefix(pixels, ids, mask)
    B = prefix.shape[0]
    lat = torch.zeros(B, 0, dtype=torch.long)
    for _ in range(model.config.latent.num_tokens):
        h = model._forward_slots(prefix, pmask, model.latent.train_slots({"latent_tokens": torch.cat([lat, lat.new_zeros(B, 1)], 1)}))
        lat = torch.cat([lat, model.latent_head(h[:, -1]).argmax(-1)[:, None]], 1)
    acfg = model.config.action
    act = torch.zeros(B, 0, dtype=torch.long)
    for j in range(acfg.chunk_size * acfg.action_dim):
        h = model._forward_slots(prefix, pmask, model.head.train_slots({"action_tokens": torch.cat([act, act.new_zeros(B, 1)], 1)}))
        act = torch.cat([act, model.head.logits(h[:, -1:], first_index=j)[:, 0].argmax(-1)[:, None]], 1)
    return lat, act.view(B, acfg.chunk_size, acfg.action_dim)


@pytest.mark.parametrize("chunk", [1, 2])
def test_cached_decoding_matches_decoding_without_cache(tmp_path, chunk):
    import torch

    from lapa_learning.vla.processor_vla import encode_prompts, preprocess_images

    pol = Policy.load(make_tiny_checkpoint(tmp_path / "ck", chunk_size=chunk, head="discrete", seed=3), device="cpu")
    m = pol.model
    ins = ["push the puck to the goal", "open the door", "close the drawer quickly please", "push"]
    pixels = preprocess_images(np.stack([_img(seed=10 + i) for i in range(4)]), 64)
    ids, mask = encode_prompts(pol.tokenizer, m.config.prompt_template, ins, m.config.language.max_text_tokens)
    with torch.inference_mode():
        lat, act = _greedy_without_cache(m, pixels, ids, mask)
        for parallel in (True, False):
            m.parallel_branches = parallel
            out = m.predict(pixels, ids, mask)
            torch.testing.assert_close(out["latent_tokens"], lat, rtol=0, atol=0)
            torch.testing.assert_close(out["action_tokens"], act, rtol=0, atol=0)
        only = m.predict(pixels, ids, mask, latents=False)
        assert set(only) == {"action_tokens"} and torch.equal(only["action_tokens"], act)


def test_continuous_chunk_with_latents_matches_decoding_without_cache(chunk_ckpt):
    import torch

    from lapa_learning.vla.processor_vla import encode_prompts, preprocess_images

    m = Policy.load(chunk_ckpt, device="cpu").model
    pixels = preprocess_images(np.stack([_img(seed=i) for i in range(2)]), 64)
    ids, mask = encode_prompts(Policy.load(chunk_ckpt, device="cpu").tokenizer, m.config.prompt_template,
                               ["open the drawer", "push"], 32)
    with torch.inference_mode():
        out = m.predict(pixels, ids, mask)
        prefix, pmask = m.embed_prefix(pixels, ids, mask)
        slots = m.head.first_slots(2, None)
        torch.testing.assert_close(out["actions_norm"], m.head.from_slots(m._forward_slots(prefix, pmask, slots)))
        lat = torch.zeros(2, 0, dtype=torch.long)
        for _ in range(4):
            h = m._forward_slots(prefix, pmask, m.latent.train_slots({"latent_tokens": torch.cat([lat, lat.new_zeros(2, 1)], 1)}))
            lat = torch.cat([lat, m.latent_head(h[:, -1]).argmax(-1)[:, None]], 1)
        assert torch.equal(out["latent_tokens"], lat)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_shared_prefix_decoding_with_grouped_kv_heads_and_eager_attention(tok_qwen, attn):
    """A Qwen2 LM with 2 KV heads for 4 query heads (as Qwen2.5-0.5B), SDPA and eager attention: decoding over
    the shared prefix gives the tokens of decoding each branch on its own."""
    import torch

    from lapa_learning.vla.processor_vla import encode_prompts

    m, cfg = _small_vla("qwen2", tok_qwen, seed=0)
    m.lm.set_attn_implementation(attn)
    ids, mask = encode_prompts(tok_qwen, cfg.prompt_template, ["push the puck", "open the drawer now please", "go"], 32)
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        shared = m.predict(pixels, ids, mask)
        m.parallel_branches = False
        alone = m.predict(pixels, ids, mask)
    assert set(shared) == {"latent_tokens", "action_tokens"}
    for k in shared:
        assert torch.equal(shared[k], alone[k]), k


def _small_vla(family: str, tok, seed: int):
    """A 32 px VLA whose LM (Llama or Qwen2) has 2 KV heads for 4 query heads (as Qwen2.5-0.5B), in eval mode,
    with 3 latent tokens and a discrete chunk of 2 x 4 actions. -> (model, config)"""
    import torch

    from lapa_learning.vla.configuration_vla import preset
    from lapa_learning.vla.modeling_vla import VLAModel

    torch.manual_seed(seed)
    lm = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, tie_word_embeddings=True)
    cfg = preset("tiny", image_size=32, vision=dict(overrides=dict(image_size=32, patch_size=8, hidden_size=32,
                                                                   num_hidden_layers=1, num_attention_heads=2,
                                                                   intermediate_size=64), num_tokens=4),
                 language=dict(model_type=family, overrides=lm), latent=dict(num_tokens=3, codebook_size=8),
                 action=dict(type="discrete", action_dim=4, chunk_size=2))
    return VLAModel(cfg, vocab_size=len(tok)).eval(), cfg


@pytest.fixture(scope="module")
def tok_qwen():
    from lapa_learning.vla.configuration_vla import DEFAULT_PROMPT
    from lapa_learning.vla.processor_vla import prompt_corpus, train_tokenizer
    from lapa_learning.vla.testing import tiny_corpus

    return train_tokenizer(prompt_corpus(DEFAULT_PROMPT, tiny_corpus()), 300)


def test_act_batch_with_env_ids_keeps_a_chunk_queue_per_env(tmp_path):
    """Each env id of act_batch(..., envs=) behaves exactly like its own Policy.act: same actions, chunk
    indices and re-plan points; a row that does not re-plan needs no image."""
    ck = make_tiny_checkpoint(tmp_path / "ck", chunk_size=3, head="discrete", seed=5)
    batched, single = Policy.load(ck, device="cpu"), Policy.load(ck, device="cpu")
    ins = ["push the puck to the goal", "open the door"]
    frames = {(env, t): _img(seed=100 * env + t) for env in (7, 9) for t in range(7)}
    expected = {}
    for env in (7, 9):
        single.reset()
        expected[env] = [single.act(frames[(env, t)], ins[env == 9]) for t in range(7)]
    got = {7: [], 9: []}
    for t in range(7):
        envs = [7, 9] if t < 4 else [9, 7]  # the row order may change between calls
        if t == 4:
            batched.reset(9)  # a new episode in env 9 only
            single.reset()
            expected[9][4:] = [single.act(frames[(9, u)], ins[1]) for u in range(4, 7)]
        imgs = [frames[(e, t)] if batched.will_replan_for(e) else None for e in envs]
        for e, a in zip(envs, batched.act_batch(imgs, [ins[e == 9] for e in envs], envs=envs)):
            got[e].append(a)
    for env in (7, 9):
        assert [a.chunk_index for a in got[env]] == [a.chunk_index for a in expected[env]]
        for a, b in zip(got[env], expected[env]):
            np.testing.assert_array_equal(a.values, b.values)
            np.testing.assert_array_equal(a.latent_tokens, b.latent_tokens)
    assert [a.chunk_index for a in got[7]] == [0, 1, 2, 0, 1, 2, 0]
    assert [a.chunk_index for a in got[9]] == [0, 1, 2, 0, 0, 1, 2]
    with pytest.raises(InputError, match=r"images\[0\]"):
        batched.reset()
        batched.act_batch([None], ["x"], envs=[1])
    with pytest.raises(InputError, match="distinct"):
        batched.act_batch([_img(), _img()], ["x", "y"], envs=[1, 1])
    with pytest.raises(InputError, match="one of each per row"):
        batched.act_batch([_img()], ["x", "y"], envs=[1, 2])


@pytest.mark.parametrize("head", ["discrete", "continuous"])
def test_checkpoints_written_before_action_head_classes_load_and_predict_the_same(head):
    """tests/data/vla_heads/: a tiny checkpoint per head written by the code before heads were classes."""
    data = Path(__file__).parent / "data" / "vla_heads"
    expected = json.loads((data / "expected.json").read_text())
    images = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    actions, latent = Policy.load(data / head, device="cpu").predict_chunk(images, expected["instructions"])
    np.testing.assert_allclose(actions, expected["outputs"][head]["actions"], atol=1e-5)
    np.testing.assert_array_equal(latent, expected["outputs"][head]["latent_tokens"])


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_lean_decoder_loop_equals_the_transformers_model_call(tok_qwen, family):
    """Inference runs the decoder layers directly (`VLAModel._run_layers`); it must give what the wrapped
    transformers model call gives: the same hidden states and cache at every step, hence the same tokens."""
    import torch

    from lapa_learning.vla.processor_vla import encode_prompts

    m, cfg = _small_vla(family, tok_qwen, seed=1)
    assert m._lean_ok
    calls = []
    real = m._run_layers
    m._run_layers = lambda *a: calls.append(1) or real(*a)
    ids, mask = encode_prompts(tok_qwen, cfg.prompt_template, ["push the puck", "open the drawer now please", "go"], 32)
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        lean = m.predict(pixels, ids, mask)
        assert len(calls) == 8  # the first call + 7 decode steps (3 latent and 2 x 4 action tokens: max(3, 8) - 1)
        m.lean_inference = False
        wrapped = m.predict(pixels, ids, mask)
        # the hidden states themselves, on one decode step over a cache
        prefix, pmask = m.embed_prefix(pixels, ids, mask)
        P = prefix.shape[1]
        allowed = torch.ones(3, 1, P, P, dtype=torch.bool).tril() & pmask.bool()[:, None, None, :]
        allowed |= torch.eye(P, dtype=torch.bool)
        attn = m._attn_format(allowed, prefix.dtype)
        pos = (pmask.cumsum(1) - 1).clamp(min=0)
        h_wrapped, c_wrapped = m._run(prefix, attn, use_cache=True, pos=pos)
        h_lean, c_lean = m._run_layers(prefix, attn, pos, None)
    assert len(calls) == 9  # only the explicit call above: lean_inference = False used the wrapped model
    torch.testing.assert_close(h_lean, h_wrapped, rtol=0, atol=0)
    for a, b in zip(c_lean.layers, c_wrapped.layers):
        torch.testing.assert_close(a.keys, b.keys, rtol=0, atol=0)
    for k in wrapped:
        assert torch.equal(lean[k], wrapped[k]), k
    # a continuous chunk alone (what the evaluator asks for): one call, over a 4-D mask, equal to the wrapped one
    m.add_action_head(dataclasses.replace(cfg.action, type="continuous", chunk_size=4))
    m.eval()
    with torch.inference_mode():
        m.lean_inference = True
        lean = m.predict(pixels, ids, mask, latents=False)["actions_norm"]
        m.lean_inference = False
        wrapped = m.predict(pixels, ids, mask, latents=False)["actions_norm"]
    assert len(calls) == 10 and lean.shape == (3, 4, 4)
    torch.testing.assert_close(lean, wrapped, rtol=0, atol=0)
    m.train()
    assert not m._lean_ok  # training always runs the transformers model


def test_lean_decoder_follows_weight_changes_and_leaves_adapted_layers_to_transformers(tok_qwen):
    """The lean loop holds the LM's own Parameter objects: a training step (in place) after an inference must
    show in the next inference exactly as in the wrapped call; a projection that is not a plain Linear (a LoRA
    adapter) turns the lean loop off."""
    import torch

    from lapa_learning.vla.lean import LeanDecoder
    from lapa_learning.vla.processor_vla import encode_prompts

    m, cfg = _small_vla("llama", tok_qwen, seed=3)
    ids, mask = encode_prompts(tok_qwen, cfg.prompt_template, ["push the puck", "go"], 32)
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        before = m.predict(pixels, ids, mask)
    with torch.no_grad():  # what an optimiser step does: every LM weight changes in place
        for p in m.lm.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)) * 0.5)
    with torch.inference_mode():
        lean = m.predict(pixels, ids, mask)
        m.lean_inference = False
        wrapped = m.predict(pixels, ids, mask)
    assert any(not torch.equal(before[k], lean[k]) for k in lean)  # the change is visible ...
    for k in wrapped:
        assert torch.equal(lean[k], wrapped[k]), k  # ... and the same as in the transformers call

    class Adapted(torch.nn.Module):  # stands in for a LoRA layer around q_proj that changes its output
        def __init__(self, base):
            super().__init__()
            self.base = base

        def forward(self, x):
            return 2 * self.base(x)

    m.lean_inference = True
    assert LeanDecoder.supports(m.body) and m._lean_ok
    attn = m.body.layers[1].self_attn
    attn.q_proj = Adapted(attn.q_proj)  # after the model was built: the lean loop must notice
    assert not LeanDecoder.supports(m.body) and not m._lean_ok
    with torch.inference_mode():
        prefix, pmask = m.embed_prefix(pixels, ids, mask)
        P = prefix.shape[1]
        allowed = torch.ones(2, 1, P, P, dtype=torch.bool).tril() & pmask.bool()[:, None, None, :]
        allowed |= torch.eye(P, dtype=torch.bool)
        attn, pos = m._attn_format(allowed, prefix.dtype), (pmask.cumsum(1) - 1).clamp(min=0)
        used, _ = m._run(prefix, attn, use_cache=True, pos=pos)  # lean_inference is on, the adapter is new
        m.lean_inference = False
        wrapped, _ = m._run(prefix, attn, use_cache=True, pos=pos)
        stale, _ = m._run_layers(prefix, attn, pos, None)  # what the lean loop, blind to the adapter, gives
    assert torch.equal(used, wrapped) and not torch.allclose(stale, wrapped)


def test_lean_siglip_tower_equals_the_transformers_call_and_follows_to(monkeypatch):
    """In eval mode the SigLIP encoder runs as plain tensor operations (lean.py): the same features to the bit
    as the transformers call, also after `.to(float64)` (new parameter tensors) and an in-place weight change;
    training runs the transformers model."""
    import torch

    from lapa_learning.vla.configuration_vla import preset
    from lapa_learning.vla.lean import LeanSiglipVision
    from lapa_learning.vla.modeling_vla import VisionTower

    torch.manual_seed(0)
    cfg = preset("tiny")
    tower = VisionTower(cfg.vision, cfg.image_size).eval()
    assert tower._lean is not None
    calls = []
    real = LeanSiglipVision.__call__
    monkeypatch.setattr(LeanSiglipVision, "__call__", lambda self, x: calls.append(1) or real(self, x))
    x = torch.rand(2, 3, cfg.image_size, cfg.image_size)

    def both(t, x):
        with torch.inference_mode():
            t.lean = True
            lean = t(x)
            t.lean = False
            wrapped = t(x)
        return lean, wrapped

    lean, wrapped = both(tower, x)
    assert calls == [1]
    torch.testing.assert_close(lean, wrapped, rtol=0, atol=0)
    tower = tower.to(torch.float64)
    with torch.no_grad():
        next(iter(tower.model.parameters())).mul_(1.5)
    lean64, wrapped64 = both(tower, x.double())
    assert lean64.dtype == torch.float64
    torch.testing.assert_close(lean64, wrapped64, rtol=0, atol=0)
    assert not torch.allclose(lean64.float(), lean, atol=1e-3)  # the changed weight is used
    tower.train()
    assert not tower._lean_ok(x)
