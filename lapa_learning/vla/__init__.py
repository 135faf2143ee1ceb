"""Stages 2-3 of LAPA: the vision-language-action model, its trainers, and the Policy inference API.

Heavy imports (torch, transformers) happen only when these names are used.
"""

__all__ = ["Action", "Policy", "VLAConfig", "VLAModel", "make_tiny_checkpoint"]


def __getattr__(name):
    if name in ("Action", "Policy"):
        from lapa_learning.vla import policy

        return getattr(policy, name)
    if name == "VLAConfig":
        from lapa_learning.vla.configuration_vla import VLAConfig

        return VLAConfig
    if name == "VLAModel":
        from lapa_learning.vla.modeling_vla import VLAModel

        return VLAModel
    if name == "make_tiny_checkpoint":
        from lapa_learning.vla.testing import make_tiny_checkpoint

        return make_tiny_checkpoint
    raise AttributeError(name)
