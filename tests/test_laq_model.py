import pytest
import torch

from lapa_learning.laq.modeling_laq import LAQ, Encoder, causal_mask, patchify, unpatchify
from lapa_learning.laq.testing import tiny_model_config


def test_shapes_and_param_count():
    cfg = tiny_model_config()
    model = LAQ(cfg)
    assert model.num_params() < 60_000  # a few tens of k parameters
    frames = torch.rand(3, 2, 3, 32, 32)
    out = model(frames)
    assert out["recon"].shape == (3, 3, 32, 32)
    assert out["indices"].shape == (3, 4) and out["indices"].dtype == torch.long
    assert out["loss"].ndim == 0
    assert model.encoder(frames).shape == (3, 4, cfg.code_dim)
    idx = model.encode_indices(frames)
    assert idx.min() >= 0 and idx.max() < cfg.codebook_size
    assert model.decode_indices(frames[:, 0], idx).shape == (3, 3, 32, 32)


@pytest.mark.parametrize("num_tokens,image_size,patch", [(1, 32, 8), (4, 64, 8), (9, 48, 8), (16, 64, 4)])
def test_token_counts(num_tokens, image_size, patch):
    cfg = tiny_model_config(num_tokens=num_tokens, image_size=image_size, patch_size=patch)
    assert Encoder(cfg)(torch.rand(2, 2, 3, image_size, image_size)).shape == (2, num_tokens, cfg.code_dim)


def test_patchify_round_trip():
    img = torch.rand(2, 3, 32, 32)
    assert torch.equal(unpatchify(patchify(img, 8), 8, 3), img)


def test_wrong_input_shape():
    with pytest.raises(ValueError, match=r"\(B, 2, 3, 32, 32\)"):
        LAQ(tiny_model_config())(torch.rand(2, 3, 32, 32))


def test_causal_mask_values():
    assert causal_mask(2).tolist() == [[True, False], [True, True]]


def test_temporal_stage_is_causal():
    """Frame t's features must not depend on frame t+H; frame t+H's must depend on frame t."""
    torch.manual_seed(0)
    enc = Encoder(tiny_model_config(temporal_depth=2)).eval()
    a = torch.rand(2, 2, 3, 32, 32)
    b = a.clone()
    b[:, 1] = torch.rand(2, 3, 32, 32)  # change only the later frame
    fa, fb = enc.frame_features(a), enc.frame_features(b)
    assert torch.allclose(fa[:, 0], fb[:, 0], atol=1e-6)
    assert not torch.allclose(fa[:, 1], fb[:, 1], atol=1e-3)
    c = a.clone()
    c[:, 0] = torch.rand(2, 3, 32, 32)  # change only the earlier frame: both change
    fc = enc.frame_features(c)
    assert not torch.allclose(fa[:, 1], fc[:, 1], atol=1e-3)


def test_time_layout_is_kept():
    """Swapping the two frames flips the sign of the continuous latent only if the encoder ignored time;
    with time embeddings and a causal mask it must not be a pure sign flip."""
    torch.manual_seed(0)
    enc = Encoder(tiny_model_config()).eval()
    x = torch.rand(2, 2, 3, 32, 32)
    d = enc(x)
    d_swapped = enc(x.flip(1))
    assert not torch.allclose(d, -d_swapped, atol=1e-4)


def test_residual_prediction_of_zero_output_is_copy():
    cfg = tiny_model_config(predict_residual=True)
    model = LAQ(cfg)
    torch.nn.init.zeros_(model.decoder.to_pixels.weight)
    torch.nn.init.zeros_(model.decoder.to_pixels.bias)
    frames = torch.rand(2, 2, 3, 32, 32)
    assert torch.allclose(model(frames)["recon"], frames[:, 0])
