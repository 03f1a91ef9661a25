"""LLM configurations as data: one TOML file per model, every field with its source.

File schema (``schema_version = 1``)
------------------------------------
Top level: ``schema_version`` (1), ``name`` (display name), ``hf_repo``, ``source`` (URL of the
model's ``config.json``), optional ``aliases`` (list) and ``notes``. Each field is a table with
``value`` and ``source`` (a URL, or ``derived:``/``assumption:`` text); numbers also carry
``unit``:

=====================  ==========  =========================================================
field                  unit        meaning
=====================  ==========  =========================================================
layers                 count       transformer blocks (``num_hidden_layers``)
hidden_size            elements    model width
heads                  count       query heads (``num_attention_heads``)
kv_heads               count       key/value heads (``num_key_value_heads``; = heads for MHA)
head_dim               elements    per-head width
intermediate_size      elements    MLP inner width
vocab_size             tokens      embedding rows
max_context            tokens      ``max_position_embeddings``
sliding_window         tokens      attention window; 0 means full causal attention
dtype                  (string)    storage dtype of the released weights: bf16, fp16, fp32
tie_word_embeddings    (bool)      lm_head shares the embedding matrix
attention_qkv_bias     (bool)      q, k, v projections carry a bias vector
mlp                    (string)    a gated MLP of three matrices (gate, up, down): ``swiglu``
                                   (SiLU gate) or ``geglu`` (GELU gate, Gemma)
norm                   (string)    ``rmsnorm``: two RMSNorm weight vectors per layer (before
                                   attention and before the MLP); ``rmsnorm-pre-post``: four
                                   (before and after each, Gemma-2)
=====================  ==========  =========================================================

Optional fields: ``sliding_window_layers`` (count): how many layers use the sliding window
(absent: all of them when ``sliding_window`` > 0; Gemma-2 alternates, so half of its layers);
``rope_scaling`` (string): the RoPE scaling the config names, noted but not modelled.

Derived, never stored: group size, parameter count, weight bytes, KV bytes per token.

A Hugging Face ``config.json`` (or a folder holding one) loads too: :mod:`.hf_config` maps it.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from aqua_model._checks import check_choice, check_int_array
from aqua_model._datafiles import alias_map, existing_file, read_toml
from aqua_model.costs import memory
from aqua_model.costs.dtypes import KV_DTYPES, STORAGE_DTYPES, dtype_bytes, kv_element_bytes
from aqua_model.costs.numeric import evaluate
from aqua_model.models.hf_config import MAX_MODEL_SIZE, check_head_dim, read_hf_config

SCHEMA_VERSION = 1

#: Where the shipped model files live.
DATA_DIR = Path(__file__).parent / "data"

SOURCE_PREFIXES: tuple[str, ...] = ("https://", "http://", "derived:", "assumption:")

# field -> unit (numbers) ; every one is required
_INT_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "layers": "count",
        "hidden_size": "elements",
        "heads": "count",
        "kv_heads": "count",
        "head_dim": "elements",
        "intermediate_size": "elements",
        "vocab_size": "tokens",
        "max_context": "tokens",
        "sliding_window": "tokens",
    }
)
_BOOL_FIELDS: tuple[str, ...] = ("tie_word_embeddings", "attention_qkv_bias")
#: Gated MLPs of three matrices (gate, up, down), by their gate's activation.
MLPS: tuple[str, ...] = ("swiglu", "geglu")
#: RMSNorm weight vectors per layer of each norm layout.
NORMS_PER_LAYER: Mapping[str, int] = MappingProxyType({"rmsnorm": 2, "rmsnorm-pre-post": 4})
_CHOICE_FIELDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"dtype": STORAGE_DTYPES, "mlp": MLPS, "norm": tuple(NORMS_PER_LAYER)}
)
_OPTIONAL_FIELDS: Mapping[str, str | None] = MappingProxyType(
    {"sliding_window_layers": "count", "rope_scaling": None}
)
_TOP_LEVEL: frozenset[str] = frozenset(
    {"schema_version", "name", "hf_repo", "source", "aliases", "notes"}
    | set(_INT_FIELDS)
    | set(_BOOL_FIELDS)
    | set(_CHOICE_FIELDS)
    | set(_OPTIONAL_FIELDS)
)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a decoder-only LLM, with the source of every field; build it with :func:`load`."""

    key: str
    name: str
    hf_repo: str
    source: str
    path: str
    aliases: tuple[str, ...]
    notes: str | None
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_context: int
    sliding_window: int
    dtype: str
    tie_word_embeddings: bool
    attention_qkv_bias: bool
    mlp: str
    norm: str
    sources: Mapping[str, str]
    #: Layers that attend through the sliding window (0 when ``sliding_window`` is 0).
    sliding_window_layers: int = 0
    #: RoPE scaling named by the config (e.g. "llama3, factor 32"), noted, not modelled; None if none.
    rope_scaling: str | None = None
    #: KV-cache dtype it is served with (None: ``dtype``); set by :meth:`serving`, never stored.
    kv_dtype: str | None = None

    def __hash__(self) -> int:
        return hash((self.key, self.path))

    # -- derived quantities -------------------------------------------------------------------
    @property
    def group_size(self) -> int:
        """Query heads per KV head, g = heads / kv_heads (1 for MHA)."""
        return self.heads // self.kv_heads

    @property
    def sliding_window_pattern(self) -> str:
        """``"none"`` (full causal attention), ``"all"`` (every layer windowed) or ``"mixed"``
        (some layers windowed, the others global: Gemma-2 alternates)."""
        if self.sliding_window == 0 or self.sliding_window_layers == 0:
            return "none"
        return "all" if self.sliding_window_layers == self.layers else "mixed"

    @property
    def q_dim(self) -> int:
        """Width of the concatenated query heads, heads * head_dim."""
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        """Width of the concatenated key (or value) heads, kv_heads * head_dim."""
        return self.kv_heads * self.head_dim

    def param_breakdown(self) -> dict[str, int]:
        """Parameter counts by part; their sum is :attr:`param_count`.

        Per layer: q (h x q_dim), k and v (h x kv_dim each), o (q_dim x h), optional q/k/v
        biases, a gated MLP's gate/up/down (3 x h x intermediate), two RMSNorm weight vectors
        (four for ``rmsnorm-pre-post``).
        Plus the embedding (vocab x h), the final norm and the lm_head unless tied.
        """
        h = self.hidden_size
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        if self.attention_qkv_bias:
            attn += self.q_dim + 2 * self.kv_dim
        mlp = 3 * h * self.intermediate_size
        norms = NORMS_PER_LAYER[self.norm] * h
        return {
            "embedding": self.vocab_size * h,
            "attention": self.layers * attn,
            "mlp": self.layers * mlp,
            "norms": self.layers * norms + h,
            "lm_head": 0 if self.tie_word_embeddings else self.vocab_size * h,
        }

    @property
    def param_count(self) -> int:
        """Total parameters (embeddings, attention, gated MLP, norms, lm_head unless tied)."""
        return sum(self.param_breakdown().values())

    def weight_bytes(self, dtype: str | None = None) -> int:
        """Bytes of all weights stored in ``dtype`` (default: the model's own dtype)."""
        return self.param_count * dtype_bytes(self.dtype if dtype is None else dtype)

    def serving(self, *, dtype: str | None = None, kv_dtype: str | None = None) -> ModelConfig:
        """This model served in storage dtype ``dtype`` (weights and attention compute) with a
        KV cache in ``kv_dtype`` (``bf16``, ``fp16``, ``fp32``, ``fp8``, ``int4``); None keeps each."""
        if dtype is not None:
            check_choice("dtype", dtype, STORAGE_DTYPES)
        if kv_dtype is not None:
            check_choice("kv_dtype", kv_dtype, KV_DTYPES)
        return replace(self, dtype=dtype or self.dtype, kv_dtype=kv_dtype or self.kv_dtype)

    @property
    def cache_dtype(self) -> str:
        """The KV-cache dtype: ``kv_dtype`` when set, else ``dtype``."""
        return self.kv_dtype or self.dtype

    def kv_bytes_per_token(self, dtype: str | None = None) -> int | float:
        """Bytes of K and V cached per token, over all layers: 2 * layers * kv_heads * head_dim * s,
        with s of KV-cache dtype ``dtype`` (default: :attr:`cache_dtype`; ``fp8``, ``int4`` with its
        scales too: :func:`aqua_model.costs.dtypes.kv_element_bytes`)."""
        s = kv_element_bytes(self.cache_dtype if dtype is None else dtype)
        per_head = evaluate(
            memory.kv_cache_bytes("dense"), {"N": 1, "d": self.head_dim, "s": s}
        )  # the one KV-bytes formula
        total = float(per_head) * self.kv_heads * self.layers
        return int(total) if total.is_integer() else total

    def attended_tokens(self, context: Any) -> np.ndarray:
        """Tokens one query attends to at ``context`` (scalar or array): min(context, window)
        for a sliding-window model, else ``context``. Checks ``context`` against max_context."""
        ctx = self.check_context(context)
        return np.minimum(ctx, self.sliding_window) if self.sliding_window > 0 else ctx

    def check_context(self, context: Any) -> np.ndarray:
        """Return ``context`` as an int64 array, or raise if any value is < 1 or > max_context."""
        ctx = check_int_array("context", context, minimum=1)
        if int(ctx.max()) > self.max_context:
            raise ValueError(
                f"context {int(ctx.max())} exceeds the maximum context of {self.name} "
                f"({self.max_context} tokens, max_position_embeddings in {self.source})"
            )
        return ctx

    # -- provenance and display ---------------------------------------------------------------
    def source_of(self, field: str) -> str:
        """The source of one stored field."""
        if field not in self.sources:
            raise ValueError(
                f"field {field!r} is not in model {self.key!r}; known fields: {', '.join(self.sources)}"
            )
        return self.sources[field]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: stored fields with units and sources, and the derived quantities."""
        fields: dict[str, Any] = {}
        for f, unit in _INT_FIELDS.items():
            fields[f] = {"value": getattr(self, f), "unit": unit, "source": self.sources[f]}
        for f in _BOOL_FIELDS + tuple(_CHOICE_FIELDS):
            fields[f] = {"value": getattr(self, f), "source": self.sources[f]}
        fields["sliding_window_layers"] = {
            "value": self.sliding_window_layers,
            "unit": "count",
            "source": self.sources.get("sliding_window_layers", self.sources["sliding_window"]),
        }
        fields["rope_scaling"] = {
            "value": self.rope_scaling,
            "source": self.sources.get("rope_scaling", self.source),
        }
        return {
            "schema_version": SCHEMA_VERSION,
            "key": self.key,
            "name": self.name,
            "hf_repo": self.hf_repo,
            "source": self.source,
            "path": self.path,
            "aliases": list(self.aliases),
            "notes": self.notes,
            "fields": fields,
            "derived": {
                "group_size": self.group_size,
                "sliding_window_pattern": self.sliding_window_pattern,
                "param_count": self.param_count,
                "param_breakdown": self.param_breakdown(),
                "weight_bytes": self.weight_bytes(),
                "kv_bytes_per_token": self.kv_bytes_per_token(),
                "dtype": self.dtype,
            },
        }

    def describe(self) -> str:
        """A readable summary (for ``aqua-model models show``)."""
        lines = [f"{self.name} ({self.hf_repo})  key: {self.key}", f"config: {self.source}"]
        for f, unit in _INT_FIELDS.items():
            lines.append(f"  {f:<20} {getattr(self, f):>8} {unit}")
        for f in _BOOL_FIELDS + tuple(_CHOICE_FIELDS):
            lines.append(f"  {f:<20} {getattr(self, f)!s:>8}")
        lines.append(
            f"  sliding_window_layers {self.sliding_window_layers:>6} count ({self.sliding_window_pattern})"
        )
        lines.append(f"  rope_scaling        {self.rope_scaling or 'none'} (noted, not modelled)")
        lines.append(f"  group size g        {self.group_size:>8}")
        lines.append(f"  parameters          {self.param_count / 1e9:>8.3f} B")
        lines.append(f"  weight bytes ({self.dtype})  {self.weight_bytes() / 1e9:.2f} GB")
        lines.append(f"  KV bytes / token    {self.kv_bytes_per_token():>8} ({self.dtype}, all layers, K+V)")
        if self.notes:
            lines.append(f"notes: {self.notes}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def list_models() -> list[str]:
    """Keys (file stems) of the shipped model files, sorted."""
    return sorted(p.stem for p in DATA_DIR.glob("*.toml"))


def aliases() -> dict[str, str]:
    """Every accepted alternative name (lower case) and the model key it stands for."""
    return dict(_alias_map())


def load(name_or_path: str | os.PathLike[str]) -> ModelConfig:
    """Load a model by key or alias (exact match, case-insensitive), a model TOML file by path,
    or a Hugging Face ``config.json`` (or a folder holding one) by path (:mod:`.hf_config`).

    Names are matched whole: ``"llama"`` or ``"8b"`` match nothing. Raises ValueError listing
    the known names for an unknown one, and naming the file and field for a bad file.
    """
    if isinstance(name_or_path, os.PathLike):
        return _load_any_path(Path(name_or_path))
    if not isinstance(name_or_path, str):
        raise TypeError(
            f"model must be a model name or a path, got {name_or_path!r} of type {type(name_or_path).__name__}"
        )
    text = name_or_path.strip()
    if not text:
        raise ValueError("model must be a model name or a path, got an empty string")
    if text.endswith((".toml", ".json")):
        return _load_any_path(Path(text))
    key = text.lower()
    amap = _alias_map()
    key = amap.get(key, key)
    if key not in list_models() and Path(text).expanduser().exists():  # a model folder holding config.json
        return _load_any_path(Path(text))
    if key not in list_models():
        alias_text = ", ".join(f"{a}->{k}" for a, k in sorted(amap.items()))
        what = (
            "is neither a known model nor an existing file or folder"
            if ("/" in text or os.sep in text)
            else "is not a known model"
        )
        raise ValueError(
            f"model {name_or_path!r} {what}; known models: {', '.join(list_models())} "
            f"(aliases: {alias_text}); or pass the path of a model TOML file, of a Hugging Face config.json, "
            f"or of a folder holding one"
        )
    return _load_path(DATA_DIR / f"{key}.toml")


@lru_cache(maxsize=1)
def _alias_map() -> Mapping[str, str]:
    return alias_map(list_models(), lambda key: _load_path(DATA_DIR / f"{key}.toml").aliases, "model")


def _load_any_path(path: Path) -> ModelConfig:
    """A model TOML, a Hugging Face config.json, or a folder holding a config.json."""
    path = path.expanduser()
    if path.is_dir() or path.suffix == ".json":
        return ModelConfig(**read_hf_config(path))
    return _load_path(path)


def _load_path(path: Path) -> ModelConfig:
    resolved = existing_file(path, "model")
    return _load_cached(str(resolved), resolved.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _load_cached(path_text: str, _mtime_ns: int) -> ModelConfig:
    path = Path(path_text)
    return _parse(read_toml(path), path)


def _parse(raw: Mapping[str, Any], path: Path) -> ModelConfig:
    where = str(path)
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise ValueError(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_TOP_LEVEL))}"
        )
    for field in ("schema_version", "name", "hf_repo", "source"):
        if field not in raw:
            raise ValueError(f"{where}: missing required field {field!r}")
    if isinstance(raw["schema_version"], bool) or raw["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"{where}: schema_version must be {SCHEMA_VERSION}, got {raw['schema_version']!r}")
    for field in ("name", "hf_repo", "source"):
        if not isinstance(raw[field], str) or not raw[field].strip():
            raise ValueError(f"{where}: field {field!r} must be a non-empty string")
    if not raw["source"].startswith(("https://", "http://")):
        raise ValueError(f"{where}: field 'source' must be the URL of the model's config.json")
    alias_list = raw.get("aliases", [])
    if not isinstance(alias_list, list) or not all(isinstance(a, str) and a.strip() for a in alias_list):
        raise ValueError(f"{where}: field 'aliases' must be a list of non-empty strings")
    notes = raw.get("notes")
    if notes is not None and not isinstance(notes, str):
        raise ValueError(f"{where}: field 'notes' must be a string")

    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for field, unit in _INT_FIELDS.items():
        entry = _entry(raw, field, where, unit=unit)
        value = entry["value"]
        minimum = 0 if field == "sliding_window" else 1
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
            raise ValueError(f"{where}: field {field!r} must be an integer >= {minimum}, got {value!r}")
        if int(value) > MAX_MODEL_SIZE:
            raise ValueError(
                f"{where}: field {field!r} must be <= {MAX_MODEL_SIZE} (2**40), got {value!r:.40}"
            )
        values[field] = int(value)
        sources[field] = entry["source"]
    for field in _BOOL_FIELDS:
        entry = _entry(raw, field, where, unit=None)
        if not isinstance(entry["value"], bool):
            raise ValueError(f"{where}: field {field!r} must be true or false, got {entry['value']!r}")
        values[field] = entry["value"]
        sources[field] = entry["source"]
    for field, allowed in _CHOICE_FIELDS.items():
        entry = _entry(raw, field, where, unit=None)
        if entry["value"] not in allowed:
            raise ValueError(
                f"{where}: field {field!r} must be one of {', '.join(allowed)}, got {entry['value']!r}"
            )
        values[field] = entry["value"]
        sources[field] = entry["source"]
    check_head_dim(values["head_dim"], f"{where}: field 'head_dim'")

    if values["heads"] % values["kv_heads"]:
        raise ValueError(
            f"{where}: heads ({values['heads']}) must be a multiple of kv_heads ({values['kv_heads']})"
        )
    if values["sliding_window"] > values["max_context"]:
        raise ValueError(
            f"{where}: sliding_window ({values['sliding_window']}) exceeds max_context ({values['max_context']})"
        )
    if "sliding_window_layers" in raw:
        entry = _entry(raw, "sliding_window_layers", where, unit="count")
        n = entry["value"]
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or not 0 <= int(n) <= values["layers"]:
            raise ValueError(
                f"{where}: field 'sliding_window_layers' must be an integer in 0..layers ({values['layers']}), got {n!r}"
            )
        if values["sliding_window"] == 0 and n:
            raise ValueError(
                f"{where}: field 'sliding_window_layers' is {n} but sliding_window is 0 (no window)"
            )
        values["sliding_window_layers"] = int(n)
        sources["sliding_window_layers"] = entry["source"]
    else:  # documented default: a window, when there is one, applies to every layer
        values["sliding_window_layers"] = values["layers"] if values["sliding_window"] else 0
    if "rope_scaling" in raw:
        entry = _entry(raw, "rope_scaling", where, unit=None)
        if not isinstance(entry["value"], str) or not entry["value"].strip():
            raise ValueError(
                f"{where}: field 'rope_scaling' must be a non-empty string, got {entry['value']!r}"
            )
        values["rope_scaling"] = entry["value"]
        sources["rope_scaling"] = entry["source"]

    return ModelConfig(
        key=path.stem.lower(),
        name=raw["name"],
        hf_repo=raw["hf_repo"],
        source=raw["source"],
        path=where,
        aliases=tuple(a.strip().lower() for a in alias_list),
        notes=notes,
        sources=MappingProxyType(sources),
        **values,
    )


def _entry(raw: Mapping[str, Any], field: str, where: str, *, unit: str | None) -> Mapping[str, Any]:
    if field not in raw:
        raise ValueError(f"{where}: missing required field {field!r}")
    entry = raw[field]
    required = ("value", "source") + (("unit",) if unit is not None else ())
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: field {field!r} must be a table with {', '.join(required)}")
    allowed = set(required) | {"note"}
    extra = sorted(set(entry) - allowed)
    if extra:
        raise ValueError(f"{where}: field {field!r} has unknown key(s) {', '.join(extra)}")
    for key in required:
        if key not in entry:
            raise ValueError(f"{where}: field {field!r} is missing {key!r}")
    if unit is not None and entry["unit"] != unit:
        raise ValueError(f"{where}: field {field!r} has unit {entry['unit']!r}; its unit must be {unit!r}")
    source = entry["source"]
    if not isinstance(source, str) or not source.startswith(SOURCE_PREFIXES):
        raise ValueError(
            f"{where}: field {field!r} needs a source starting with one of {', '.join(SOURCE_PREFIXES)}, got {source!r}"
        )
    return entry
