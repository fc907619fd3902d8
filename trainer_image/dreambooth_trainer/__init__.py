"""DreamBooth fine-tuning of Stable Diffusion as a SageMaker training container.

Importing the package stays cheap and torch-free: `hyperparameters`, `metrics` and `vram_presets` are used by
the Lambdas that build training jobs.
"""

__version__ = "0.1.0"
