"""Any Hugging Face model by its ``config.json``: map it to the fields of a
:class:`~aqua_model.models.config.ModelConfig` (which :func:`aqua_model.models.load` builds).

The mapping reads the fields every decoder config of the supported architectures carries:

=============================  =================================================================
ModelConfig field              config.json
=============================  =================================================================
layers                         ``num_hidden_layers``
hidden_size                    ``hidden_size``
heads                          ``num_attention_heads``
kv_heads                       ``num_key_value_heads`` (null: = heads, MHA; absent: the default)
head_dim                       ``head_dim`` (null: hidden_size / num_attention_heads; absent: the
                               default, e.g. 256 for Gemma and Gemma-2)
intermediate_size              ``intermediate_size``
vocab_size                     ``vocab_size``
max_context                    ``max_position_embeddings``
sliding_window                 ``sliding_window`` where the architecture uses it (Qwen2: only
                               with ``use_sliding_window``); null, or a window >= max_context: 0
sliding_window_layers          ``layer_types`` when given; else all layers (Mistral), Qwen2's
                               layers from ``max_window_layers`` on, every other layer (Gemma-2)
dtype                          ``torch_dtype`` (or ``dtype``): bfloat16, float16, float32
tie_word_embeddings            ``tie_word_embeddings`` (absent: the architecture's default)
attention_qkv_bias             ``attention_bias`` (Qwen2: always true)
mlp                            ``hidden_activation`` / ``hidden_act``: silu -> swiglu, gelu* -> geglu
norm                           by architecture: rmsnorm (2 per layer), Gemma-2 rmsnorm-pre-post (4)
rope_scaling                   ``rope_scaling``: noted (type and factor), not modelled
=============================  =================================================================

A field the file leaves out takes the value transformers gives that ``model_type``: read through
``transformers.AutoConfig.for_model`` where transformers is installed (offline: built from the
file's own fields, never from a hub), else from :data:`HF_DEFAULTS`, a table that a test checks
against AutoConfig.

Supported ``model_type`` values: :data:`ARCHITECTURES`. Anything the mapping cannot read (an
unknown architecture, a mixture of experts, a missing or malformed field) raises ValueError
naming the file and the field.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

#: Largest value a size field of a model config may take (2**40, about 1.1e12): real configs stay
#: below 1e7 (vocabularies ~2.6e5, contexts ~1e7), and products of a few such fields then stay
#: inside int64 and float64 (a parameter count of 1e400 overflowed the float division of its print).
MAX_MODEL_SIZE = 1 << 40

#: The file name a model folder holds its config in.
CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class Architecture:
    """What a ``model_type`` implies beyond its config fields."""

    norm: str
    #: q/k/v bias: ``None`` reads ``attention_bias`` (default false); True or False is fixed.
    qkv_bias: bool | None
    #: tie_word_embeddings when the config does not say (the transformers class default).
    tie_default: bool
    #: how the sliding window is used: "none", "all" (every layer), "qwen2" (``use_sliding_window``
    #: and ``max_window_layers``), "alternate" (even layers windowed, Gemma-2).
    window: str


#: model_type -> its architecture (from each model's modelling code in transformers).
ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType(
    {
        "llama": Architecture("rmsnorm", None, False, "none"),
        "mistral": Architecture("rmsnorm", False, False, "all"),
        "qwen2": Architecture("rmsnorm", True, False, "qwen2"),
        "gemma": Architecture("rmsnorm", None, True, "none"),
        "gemma2": Architecture("rmsnorm-pre-post", None, True, "alternate"),
    }
)
#: hidden activation -> the gated MLP it names.
ACTIVATIONS: Mapping[str, str] = MappingProxyType(
    {
        "silu": "swiglu",
        "swish": "swiglu",
        "gelu": "geglu",
        "gelu_pytorch_tanh": "geglu",
        "gelu_new": "geglu",
        "gelu_fast": "geglu",
    }
)
#: torch dtype names -> storage dtypes.
TORCH_DTYPES: Mapping[str, str] = MappingProxyType({"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"})
#: Config fields that mean an architecture the attention model does not cover.
UNSUPPORTED_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "num_local_experts": "a mixture of experts",
        "num_experts": "a mixture of experts",
        "kv_lora_rank": "multi-head latent attention",
        "q_lora_rank": "multi-head latent attention",
    }
)
#: Marks a default that transformers derives from other fields rather than a fixed value.
DERIVED = "derived"
#: model_type -> what transformers' config class puts in each optional field that a config.json
#: leaves out (transformers 5's dataclass defaults; DERIVED: head_dim = hidden_size //
#: num_attention_heads, num_key_value_heads = num_attention_heads). tie_word_embeddings is in
#: :data:`ARCHITECTURES`. Checked against ``transformers.AutoConfig`` by tests/test_usability_correct.py.
HF_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "llama": MappingProxyType(
            {"head_dim": DERIVED, "num_key_value_heads": DERIVED, "hidden_act": "silu"}
        ),
        "mistral": MappingProxyType(
            {"head_dim": DERIVED, "num_key_value_heads": 8, "hidden_act": "silu", "sliding_window": 4096}
        ),
        "qwen2": MappingProxyType(
            {
                "head_dim": DERIVED,
                "num_key_value_heads": 32,
                "hidden_act": "silu",
                "sliding_window": 4096,
                "use_sliding_window": False,
                "max_window_layers": 28,
            }
        ),
        "gemma": MappingProxyType(
            {"head_dim": 256, "num_key_value_heads": 16, "hidden_act": "gelu_pytorch_tanh"}
        ),
        "gemma2": MappingProxyType(
            {
                "head_dim": 256,
                "num_key_value_heads": 4,
                "hidden_activation": "gelu_pytorch_tanh",
                "sliding_window": 4096,
            }
        ),
    }
)
#: The config.json fields handed to AutoConfig when it is asked for the defaults of the others.
_AUTOCONFIG_FIELDS = (
    "hidden_size",
    "num_attention_heads",
    "num_hidden_layers",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "hidden_activation",
    "sliding_window",
    "use_sliding_window",
    "max_window_layers",
)
_LAYER_TYPES = ("full_attention", "sliding_attention")
_NORM_TEXT = {
    "rmsnorm": "RMSNorm before attention and before the MLP",
    "rmsnorm-pre-post": "RMSNorm before and after attention and the MLP",
}


def config_path(path: str | Path) -> Path:
    """The ``config.json`` that ``path`` names: the file itself, or the one in a model folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / CONFIG_NAME
        if not p.is_file():
            raise ValueError(f"model folder {str(path)!r} holds no {CONFIG_NAME}")
    elif not p.is_file():
        raise ValueError(f"model file {str(path)!r} does not exist")
    return p.resolve()


def read_hf_config(path: str | Path) -> dict[str, Any]:
    """The ModelConfig fields of a Hugging Face ``config.json`` (or of a folder holding one)."""
    p = config_path(path)
    try:
        raw = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{p}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: a config.json must hold a JSON object, got {type(raw).__name__}")
    return map_hf_config(raw, p)


def map_hf_config(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The mapping itself (see the module docstring); ``path`` names the file in errors and sources."""
    where = str(path)
    source = path.as_uri() if path.is_absolute() else str(path)
    sources: dict[str, str] = {}

    def src(field: str, text: str) -> str:
        return f"{source} ({text})"

    model_type = raw.get("model_type")
    if not isinstance(model_type, str) or model_type not in ARCHITECTURES:
        hint = " (a multimodal config keeps its decoder under 'text_config')" if "text_config" in raw else ""
        raise ValueError(
            f"{where}: field 'model_type' is {model_type!r}; the mapping knows {', '.join(ARCHITECTURES)}{hint}; "
            "for another architecture write a model TOML file (see aqua_model.models.config)"
        )
    arch = ARCHITECTURES[model_type]
    for field, what in UNSUPPORTED_FIELDS.items():
        if raw.get(field):
            raise ValueError(
                f"{where}: field {field!r} = {raw[field]!r} describes {what}, which the model does not cover"
            )
    if raw.get("mlp_bias"):
        raise ValueError(
            f"{where}: field 'mlp_bias' is true; MLP biases are not counted (only q/k/v biases are)"
        )

    def integer(field: str, *, minimum: int = 1) -> int:
        if field not in raw or raw[field] is None:
            raise ValueError(f"{where}: missing required field {field!r}")
        value = raw[field]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
            raise ValueError(f"{where}: field {field!r} must be an integer >= {minimum}, got {value!r}")
        if int(value) > MAX_MODEL_SIZE:
            raise ValueError(
                f"{where}: field {field!r} must be <= {MAX_MODEL_SIZE} (2**40), got {value!r:.40}"
            )
        return int(value)

    values: dict[str, Any] = {}
    for name, field in (
        ("layers", "num_hidden_layers"),
        ("hidden_size", "hidden_size"),
        ("heads", "num_attention_heads"),
        ("intermediate_size", "intermediate_size"),
        ("vocab_size", "vocab_size"),
        ("max_context", "max_position_embeddings"),
    ):
        values[name] = integer(field)
        sources[name] = src(name, field)
    raw, defaulted = _with_defaults(raw, model_type)
    if raw.get("num_key_value_heads") is None:
        values["kv_heads"] = values["heads"]
        sources["kv_heads"] = src(
            "kv_heads", "no num_key_value_heads: = num_attention_heads, multi-head attention"
        )
    else:
        values["kv_heads"] = integer("num_key_value_heads")
        sources["kv_heads"] = src("kv_heads", defaulted.get("num_key_value_heads", "num_key_value_heads"))
    if values["heads"] % values["kv_heads"]:
        raise ValueError(
            f"{where}: num_attention_heads ({values['heads']}) must be a multiple of "
            f"num_key_value_heads ({values['kv_heads']}"
            + (f"; {defaulted['num_key_value_heads']}" if "num_key_value_heads" in defaulted else "")
            + ")"
        )
    if raw.get("head_dim") is None:
        if values["hidden_size"] % values["heads"]:
            raise ValueError(
                f"{where}: no field 'head_dim', and hidden_size ({values['hidden_size']}) is not a multiple of "
                f"num_attention_heads ({values['heads']})"
            )
        values["head_dim"] = values["hidden_size"] // values["heads"]
        sources["head_dim"] = src(
            "head_dim",
            f"derived: hidden_size / num_attention_heads = {values['hidden_size']} / {values['heads']}",
        )
    else:
        values["head_dim"] = integer("head_dim")
        sources["head_dim"] = src("head_dim", defaulted.get("head_dim", "head_dim"))

    derived = "" if raw.get("head_dim") is not None else " (hidden_size / num_attention_heads)"
    check_head_dim(values["head_dim"], f"{where}: head_dim{derived}")

    dtype_field = "torch_dtype" if "torch_dtype" in raw else "dtype"
    if raw.get(dtype_field) not in TORCH_DTYPES:
        raise ValueError(
            f"{where}: field 'torch_dtype' must be one of {', '.join(TORCH_DTYPES)}, got {raw.get(dtype_field)!r}"
        )
    values["dtype"] = TORCH_DTYPES[raw[dtype_field]]
    sources["dtype"] = src("dtype", f"{dtype_field} {raw[dtype_field]}")

    act_field = "hidden_activation" if raw.get("hidden_activation") is not None else "hidden_act"
    act = raw.get(act_field)
    if not isinstance(act, str) or act not in ACTIVATIONS:
        raise ValueError(
            f"{where}: field {act_field!r} must be one of {', '.join(ACTIVATIONS)} (a gated MLP), got {act!r}"
        )
    values["mlp"] = ACTIVATIONS[act]
    sources["mlp"] = src("mlp", f"{act_field} {act}: gate, up and down projections")
    values["norm"] = arch.norm
    sources["norm"] = src("norm", f"model_type {model_type}: {_NORM_TEXT[arch.norm]}")

    values["tie_word_embeddings"] = _boolean(raw, "tie_word_embeddings", arch.tie_default, where)
    sources["tie_word_embeddings"] = src(
        "tie_word_embeddings",
        "tie_word_embeddings"
        if "tie_word_embeddings" in raw
        else f"absent: the {model_type} default, {arch.tie_default}",
    )
    if arch.qkv_bias is None:
        values["attention_qkv_bias"] = _boolean(raw, "attention_bias", False, where)
        sources["attention_qkv_bias"] = src(
            "attention_qkv_bias", "attention_bias" if "attention_bias" in raw else "absent: false"
        )
    else:
        values["attention_qkv_bias"] = arch.qkv_bias
        sources["attention_qkv_bias"] = src(
            "attention_qkv_bias", f"model_type {model_type}: q/k/v bias {arch.qkv_bias}"
        )

    window, window_layers, window_note = _sliding_window(
        raw, arch, values["layers"], values["max_context"], where
    )
    values["sliding_window"], values["sliding_window_layers"] = window, window_layers
    sources["sliding_window"] = sources["sliding_window_layers"] = src("sliding_window", window_note)
    values["rope_scaling"] = _rope_scaling(raw.get("rope_scaling"), where)
    sources["rope_scaling"] = src("rope_scaling", "rope_scaling")

    fallback = (
        path.parent.name if path.name == CONFIG_NAME else path.stem
    )  # a model folder, or a renamed config file
    name_or_path = raw.get("_name_or_path")
    name = name_or_path if isinstance(name_or_path, str) and name_or_path else fallback
    notes = [f"mapped from {path.name} (model_type {model_type})"]
    if values["rope_scaling"]:
        notes.append(f"RoPE scaling {values['rope_scaling']} noted, not modelled")
    if model_type in ("llama", "gemma", "gemma2") and values["attention_qkv_bias"]:
        notes.append(
            "attention_bias also adds an o_proj bias, not counted (hidden_size parameters per layer)"
        )
    return dict(
        key=(name or "config").lower().replace("/", "--"),
        name=name or "config",
        hf_repo=name or "unknown",
        source=source,
        path=where,
        aliases=(),
        notes="; ".join(notes),
        sources=MappingProxyType(sources),
        **values,
    )


def check_head_dim(head_dim: int, what: str) -> None:
    """Raise naming ``what`` (the file and field) when a model's head dim is beyond what the cost
    model evaluates (:data:`aqua_model.costs.flop_breakeven.MAX_SIZE`), rather than blaming --d later."""
    from aqua_model.costs.flop_breakeven import MAX_SIZE

    if head_dim > MAX_SIZE:
        raise ValueError(f"{what} is {head_dim}; the cost model takes head dims up to {MAX_SIZE}")


def hf_defaults(
    model_type: str, raw: Mapping[str, Any], *, use_transformers: bool | None = None
) -> dict[str, Any]:
    """What transformers gives each field of :data:`HF_DEFAULTS` that ``raw`` leaves out (absent,
    not null): a value, or :data:`DERIVED`. ``use_transformers``: None reads the defaults of the
    config class ``transformers.AutoConfig`` maps ``model_type`` to where transformers is
    installed, else the table; True or False forces one. Offline: no file or hub is read."""
    missing = [f for f in HF_DEFAULTS[model_type] if f not in raw]
    if not missing:
        return {}
    if use_transformers is None:
        import importlib.util

        use_transformers = importlib.util.find_spec("transformers") is not None
    if not use_transformers:
        return {f: HF_DEFAULTS[model_type][f] for f in missing}
    import inspect

    from transformers import CONFIG_MAPPING  # the model_type -> config class table AutoConfig reads

    params = inspect.signature(CONFIG_MAPPING[model_type]).parameters
    out = {}
    for f in missing:
        default = params[f].default if f in params else None
        # None (or no such field): the class derives it after construction (head_dim, kv heads)
        out[f] = DERIVED if default is None or default is inspect.Parameter.empty else default
    return out


def _with_defaults(raw: Mapping[str, Any], model_type: str) -> tuple[dict[str, Any], dict[str, str]]:
    """``raw`` with its absent optional fields filled by :func:`hf_defaults` (a derived one is left
    absent, for the mapping to derive), and a source note per filled field."""
    filled = {f: v for f, v in hf_defaults(model_type, raw).items() if v != DERIVED}
    notes = {f: f"absent: the transformers {model_type} default, {v!r}" for f, v in filled.items()}
    return {**raw, **filled}, notes


def _boolean(raw: Mapping[str, Any], field: str, default: bool, where: str) -> bool:
    value = raw.get(field, default)
    if not isinstance(value, bool):
        raise ValueError(f"{where}: field {field!r} must be true or false, got {value!r}")
    return value


def _sliding_window(
    raw: Mapping[str, Any], arch: Architecture, layers: int, max_context: int, where: str
) -> tuple[int, int, str]:
    """(window, windowed layers, how it was read)."""
    window = raw.get("sliding_window")
    if arch.window == "none" or window is None:
        return 0, 0, "no sliding window: full causal attention"
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(
            f"{where}: field 'sliding_window' must be a positive integer or null, got {window!r}"
        )
    if arch.window == "qwen2" and not _boolean(raw, "use_sliding_window", False, where):
        return 0, 0, "use_sliding_window false: full causal attention"
    if int(window) >= max_context:
        return 0, 0, f"sliding_window {window} >= max_position_embeddings: the window never binds"
    types = raw.get("layer_types")
    if types is not None:
        if not isinstance(types, list) or len(types) != layers or any(t not in _LAYER_TYPES for t in types):
            raise ValueError(
                f"{where}: field 'layer_types' must list {layers} of {', '.join(_LAYER_TYPES)}, got {types!r:.80}"
            )
        count = types.count("sliding_attention")
        return (
            (
                int(window),
                count,
                f"sliding_window {window} on the {count} 'sliding_attention' layers of layer_types",
            )
            if count
            else (0, 0, "layer_types has no sliding_attention layer")
        )
    if arch.window == "alternate":
        count = math.ceil(layers / 2)
        return (
            int(window),
            count,
            f"sliding_window {window} on every other layer (layers 0, 2, ...: {count} of {layers})",
        )
    if arch.window == "qwen2":
        start = raw.get("max_window_layers", 0)
        if isinstance(start, bool) or not isinstance(start, numbers.Integral) or start < 0:
            raise ValueError(f"{where}: field 'max_window_layers' must be an integer >= 0, got {start!r}")
        count = max(0, layers - int(start))
        return (
            (int(window), count, f"sliding_window {window} on layers {start}.. (max_window_layers)")
            if count
            else (
                0,
                0,
                "use_sliding_window true but max_window_layers covers every layer: full causal attention",
            )
        )
    return int(window), layers, f"sliding_window {window} on every layer"


def _rope_scaling(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: field 'rope_scaling' must be an object or null, got {value!r:.80}")
    kind = value.get("rope_type", value.get("type", "unnamed"))
    parts = [str(kind)]
    for key in ("factor", "original_max_position_embeddings"):
        if key in value:
            parts.append(f"{key} {value[key]}")
    return ", ".join(parts)
