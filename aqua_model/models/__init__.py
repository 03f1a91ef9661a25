"""LLM configurations as data, and their loader.

>>> from aqua_model import models
>>> cfg = models.load("llama-3.1-8b")      # key or alias, exact match; or a path to a TOML file
>>> cfg.group_size, cfg.param_count, cfg.kv_bytes_per_token()
"""

from aqua_model.models.config import DATA_DIR, SCHEMA_VERSION, ModelConfig, aliases, list_models, load
from aqua_model.models.shape import Shape, resolve_shape

__all__ = [
    "DATA_DIR",
    "SCHEMA_VERSION",
    "ModelConfig",
    "Shape",
    "aliases",
    "list_models",
    "load",
    "resolve_shape",
]
