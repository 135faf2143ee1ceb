import torch

from lapa_learning.laq.modeling_laq import LAQ
from lapa_learning.laq.quantizer import NSVQ, replacement_due
from lapa_learning.laq.testing import tiny_model_config


def test_eval_returns_nearest_code():
    q = NSVQ(code_dim=4, codebook_size=5).eval()
    d = q.codebook.data[[3, 1]].unsqueeze(0) + 1e-4  # (1, 2, 4) next to codes 3 and 1
    out, idx = q(d)
    assert idx.tolist() == [[3, 1]]
    assert torch.equal(out, q.codebook.data[[3, 1]].unsqueeze(0))


def test_noise_substitution_has_the_quantization_error_size():
    torch.manual_seed(0)
    q = NSVQ(code_dim=16, codebook_size=4).train()
    d = torch.randn(8, 3, 16)
    out, idx = q(d)
    hard = q.codebook.data[idx]
    assert torch.allclose((out - d).norm(dim=-1), (d - hard).norm(dim=-1), atol=1e-5)


def test_gradients_reach_encoder_and_codebook():
    torch.manual_seed(0)
    model = LAQ(tiny_model_config()).train()
    model(torch.rand(4, 2, 3, 32, 32))["loss"].backward()
    enc_grads = [p.grad for n, p in model.encoder.named_parameters()]
    assert all(g is not None for g in enc_grads)
    assert sum(g.abs().sum() for g in enc_grads) > 0
    assert model.encoder.patch_embed.net[1].weight.grad.abs().sum() > 0
    assert model.quantizer.codebook.grad is not None and model.quantizer.codebook.grad.abs().sum() > 0


def test_dead_codes_are_replaced_by_used_codes():
    torch.manual_seed(0)
    q = NSVQ(code_dim=4, codebook_size=6, threshold=0.1).train()
    q.codebook.data[:] = torch.arange(6).float().unsqueeze(1) * 10  # codes far apart
    d = q.codebook.data[[0, 1]].unsqueeze(0).repeat(5, 1, 1)  # (5, 2, 4): only codes 0 and 1 are ever used
    for _ in range(5):
        q(d)
    assert q.usage_counts.tolist() == [25, 25, 0, 0, 0, 0] and q.usage_batches.item() == 5
    before = q.codebook.data.clone()
    assert q.replace_dead_codes() == 4
    after = q.codebook.data
    assert torch.equal(after[:2], before[:2])  # used codes are kept
    for c in range(2, 6):  # each dead code now sits (almost) on a used one
        assert min((after[c] - before[u]).norm() for u in (0, 1)) < 0.5
        assert not any(torch.equal(after[c], before[u]) for u in (0, 1))  # but not exactly: tiny noise
    assert q.usage_counts.sum() == 0 and q.usage_batches == 0  # counting restarts


def test_rarely_used_code_counts_as_dead():
    q = NSVQ(code_dim=2, codebook_size=3, threshold=0.1).train()
    q.usage_counts[:] = torch.tensor([100.0, 50.0, 0.5])
    q.usage_batches.fill_(10)  # code 2 used 0.05 times per batch
    assert q.replace_dead_codes() == 1


def test_replacement_schedule():
    due = [s for s in range(1, 6000) if replacement_due(s)]
    assert due[:9] == list(range(10, 100, 10))
    assert due[9:18] == list(range(100, 1000, 100))
    assert due[18:] == list(range(1000, 4501, 500))
