"""Real models: our paged PyTorch forward passes, their loader and sampling."""

from seallm.models.loader import LoadedModel, cache_dir, load_model, tiny_model
from seallm.models.sampling import Generation, SamplingParams

__all__ = ["Generation", "LoadedModel", "SamplingParams", "cache_dir", "load_model", "tiny_model"]
