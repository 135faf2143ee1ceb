"""How tests/data/vla_heads/ was made, with the code of commit 3a12cd2 (before action heads became classes):
a tiny random checkpoint per head and what Policy.predict_chunk returned for fixed inputs (expected.json).
tests/test_vla_policy.py checks that today's code loads them and predicts the same. Do not rerun it (it would
overwrite the reference with today's outputs); run `python tests/data/vla_heads/make.py` only to add a head."""
import json
from pathlib import Path

import numpy as np
import torch

from lapa_learning.vla.checkpoint import save_checkpoint
from lapa_learning.vla.configuration_vla import preset
from lapa_learning.vla.modeling_vla import VLAModel
from lapa_learning.vla.policy import Policy
from lapa_learning.vla.processor_vla import ActionProcessor, prompt_corpus, train_tokenizer
from lapa_learning.vla.testing import DEFAULT_ACTION_NAMES, tiny_corpus

ROOT = Path(__file__).parent
VISION = dict(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=64)
LM = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
          max_position_embeddings=128, tie_word_embeddings=True)
INSTRUCTIONS = ["push the puck to the goal", "open the drawer"]


def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)


def main():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    outputs = {}
    for head, chunk in (("discrete", 2), ("continuous", 3)):
        cfg = preset("tiny", vision=dict(overrides=VISION, num_tokens=4),
                     language=dict(overrides=LM, tokenizer_vocab_size=128),
                     latent=dict(num_tokens=2, codebook_size=4),
                     action=dict(type=head, chunk_size=chunk, num_bins=16, hidden_dim=32))
        tokenizer = train_tokenizer(prompt_corpus(cfg.prompt_template, tiny_corpus()), cfg.language.tokenizer_vocab_size)
        model = VLAModel(cfg, vocab_size=len(tokenizer))
        acts = rng.uniform(-1, 1, size=(500, 4)).astype(np.float32)
        acts[:, -1] = np.where(rng.random(500) < 0.5, -1.0, 1.0)
        processor = ActionProcessor.fit(acts, DEFAULT_ACTION_NAMES, num_bins=cfg.action.num_bins, gripper_binary=True)
        save_checkpoint(ROOT / head, model, tokenizer, processor, {"stage": "random", "note": "tests/data/vla_heads"})
        actions, latent = Policy.load(ROOT / head, device="cpu").predict_chunk(images(), INSTRUCTIONS)
        outputs[head] = {"actions": np.asarray(actions).tolist(), "latent_tokens": np.asarray(latent).tolist()}
    (ROOT / "expected.json").write_text(json.dumps({"instructions": INSTRUCTIONS, "outputs": outputs}) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
