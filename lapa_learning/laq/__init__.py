"""Stage 1 of LAPA: Latent Action Quantization (LAQ).

    config.py     LAQConfig dataclass and the named presets (tiny, base, paper)
    quantizer.py  NSVQ quantizer with dead-code replacement
    model.py      encoder (C-ViViT style), decoder and the LAQ module
    checkpoint.py save/load of checkpoint directories (safetensors + config JSON)
    labels.py     the latent label file of a dataset (save_latent_labels, LatentLabels)
    train.py / label.py / explain.py   the `lapa laq train|label|explain` verbs

This __init__ imports nothing heavy, so `from lapa_learning.laq.labels import LatentLabels` stays cheap.
"""
