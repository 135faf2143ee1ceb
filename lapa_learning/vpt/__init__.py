"""VPT, the paper's baseline: an inverse-dynamics model (IDM) trained on the small labelled set pseudo-labels
action-free videos, and the VLA is pretrained on those pseudo-actions (Baker et al. 2022, arXiv 2206.11795).

    lapa vpt train --data LABELLED --out RUN          # IDM: (x_t, x_t+H) -> a_t
    lapa vpt label --checkpoint RUN --data VIDEOS     # -> VIDEOS/pseudo_actions.parquet
    lapa vla pretrain --data VIDEOS --targets pseudo-actions --out PRE
"""
