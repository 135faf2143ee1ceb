"""Action heads are objects (vla/heads.py): a toy third head, defined here, trains and decodes through the
public API (the CLI verb and Policy) without touching any other module."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from lapa_learning.cli import main
from lapa_learning.errors import ConfigError
from lapa_learning.vla import heads
from lapa_learning.vla.configuration_vla import ActionHeadConfig
from lapa_learning.vla.policy import Policy
from lapa_learning.vla.testing import make_toy_dataset


class MeanSquaredChunk(heads.ActionHead):
    """One query slot; a linear layer reads the whole chunk off it; MSE on normalised actions."""

    name = "toy-mse"
    help = "a test head"
    key = "toy_actions"

    def build(self, D):
        c = self.cfg
        self.query = nn.Parameter(torch.zeros(1, D))
        self.out = nn.Linear(D, c.chunk_size * c.action_dim)
        return {"toy_query": self.query, "toy_out": self.out}

    def encode(self, processor, actions):
        return processor.normalize(actions)  # (B, T, A)

    def train_slots(self, batch):
        return self.first_slots(batch[self.key].shape[0], None)

    def loss(self, h, batch):
        pred = self.from_slots(h)
        loss = ((pred - batch[self.key]) ** 2 * batch["action_mask"][..., None]).mean()
        return loss, {"loss": loss.item(), "toy_mse": loss.item()}, pred.detach()

    def first_slots(self, B, device):
        return self.query[None].expand(B, -1, -1)  # (B, 1, D)

    def from_slots(self, h):
        return self.out(h[:, 0]).float().view(h.shape[0], self.cfg.chunk_size, self.cfg.action_dim)

    def decode(self, processor, pred):
        return processor.unnormalize(pred.float().cpu().numpy())


@pytest.fixture
def toy_head(monkeypatch):
    monkeypatch.setitem(heads.HEADS, MeanSquaredChunk.name, MeanSquaredChunk)
    return MeanSquaredChunk


def test_a_toy_head_trains_and_decodes_through_the_public_api(toy_head, tmp_path):
    robot = make_toy_dataset(tmp_path / "robot", episodes=4, length=10, image_size=32, seed=0)
    run = tmp_path / "run"
    assert main(["vla", "finetune", "--data", str(robot), "--out", str(run), "--action-head", "toy-mse",
                 "--chunk-size", "2", "--max-steps", "4", "--batch-size", "8", "--eval-every", "2",
                 "--eval-samples", "16", "--threads", "1", "--no-progress", "--config", "tiny"]) == 0
    rec = json.loads((run / "checkpoint" / "train_record.json").read_text())
    assert rec["kind"] == "toy-mse" and rec["steps"] == 4
    first_eval, last_eval = rec["history"][0], rec["history"][-1]
    assert last_eval["val_loss"] < first_eval["val_loss"]  # its loss drives training
    assert len(last_eval["action_l1_per_dim"]) == 4  # evaluated by decoding to dataset units
    policy = Policy.load(run, device="cpu")
    query = policy.model.toy_query.detach().clone()
    assert query.abs().sum() > 0  # trained away from its zero init
    image = np.zeros((32, 32, 3), np.uint8)
    first, second = policy.act(image, "push the block onto the goal"), policy.act(None, "push the block onto the goal")
    assert first.values.shape == (4,) and np.isfinite(first.values).all()
    assert (first.chunk_index, second.chunk_index) == (0, 1)


def test_the_registry_names_the_heads():
    assert list(heads.HEADS)[:2] == ["discrete", "continuous"]
    with pytest.raises(ConfigError, match=r"action.type 'nope': expected one of \['discrete', 'continuous'"):
        ActionHeadConfig(type="nope")
