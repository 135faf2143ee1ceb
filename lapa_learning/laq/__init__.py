"""Stage 1 of LAPA: Latent Action Quantization (LAQ). Laid out like stages 2-3 (lapa_learning/vla/):

    configuration_laq.py  LAQConfig / LAQTrainConfig dataclasses and the named presets (tiny, base, paper)
    quantizer.py          NSVQ quantizer with dead-code replacement
    modeling_laq.py       encoder (C-ViViT style), decoder and the LAQ module
    checkpoint.py         save/load of checkpoint directories (safetensors + config JSON)
    trainer.py            the training loop (data, resumable batches, RNG state, train())
    metrics.py            held-out reconstruction and codebook metrics
    probe.py / pictures.py  the math (encoding, ridge probe) and the pictures of `explain`
    train.py / label.py / explain.py   the thin `lapa laq train|label|explain` verbs

The latent label file (the contract between stage 1 and stage 2) lives with the data formats:
lapa_learning/data/latent_labels.py. This __init__ imports nothing heavy.
"""
