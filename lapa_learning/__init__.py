"""lapa_learning: LAPA (Latent Action Pretraining from Videos) in plain PyTorch. Never imports ROS."""

__version__ = "0.1.0"
