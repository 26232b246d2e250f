"""seallm: service-aware, latency-optimized serving of many LLMs on shared GPUs."""

__version__ = "0.1.0"
