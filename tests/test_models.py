"""LLM configs: parameter counts against published sizes, loader errors, sources."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from aqua_model import models
from aqua_model._datafiles import read_toml, to_toml
from aqua_model.models.config import DATA_DIR

REQUIRED_MODELS = {"llama-3.1-8b", "llama-3.1-70b", "llama-2-7b", "mistral-7b-v0.1", "qwen2.5-7b"}
LLAMA_FILE = DATA_DIR / "llama-3.1-8b.toml"


def _raw(path: Path) -> dict:
    return read_toml(path)


def _dump(raw: dict) -> str:
    return to_toml(raw)


def _write(tmp_path: Path, raw: dict, stem: str = "model") -> Path:
    path = tmp_path / f"{stem}.toml"
    path.write_text(_dump(raw))
    return path


# -- parameter counts against the published sizes ----------------------------------------------
#
# Each derivation: embedding V*h; per layer q h*h_q, k and v h*h_kv each, o h_q*h (h_q = heads*d,
# h_kv = kv_heads*d), SwiGLU 3*h*I, two RMSNorm vectors 2h; final norm h; lm_head V*h unless tied.
#
# Llama-3.1-8B: V 128256, h 4096, 32 layers, 32/8 heads, d 128, I 14336.
#   embedding 128256*4096 = 525,336,576; per layer 16,777,216 + 2*4,194,304 + 16,777,216
#   + 3*4096*14336 (176,160,768) + 8192 = 218,112,000; *32 = 6,979,584,000; + 4096 + lm_head
#   525,336,576  ->  8,030,261,248  (published "8.03B")
# Llama-3.1-70B: V 128256, h 8192, 80 layers, 64/8 heads, d 128, I 28672.
#   embedding 1,050,673,152; per layer 2*67,108,864 + 2*8,388,608 + 704,643,072 + 16384
#   = 855,654,400; *80 = 68,452,352,000; + 8192 + 1,050,673,152  ->  70,553,706,496 ("70.6B")
# Llama-2-7B: V 32000, h 4096, 32 layers, 32/32 heads (MHA), I 11008.
#   embedding 131,072,000; per layer 4*16,777,216 + 3*4096*11008 (135,266,304) + 8192
#   = 202,383,360; *32 = 6,476,267,520; + 4096 + 131,072,000  ->  6,738,415,616 ("6.74B")
# Mistral-7B-v0.1: as Llama-3.1-8B per layer (32/8 heads, I 14336) with V 32000.
#   6,979,584,000 + 2*131,072,000 + 4096  ->  7,241,732,096  ("7.24B")
# Qwen2.5-7B: V 152064, h 3584, 28 layers, 28/4 heads, d 128, I 18944, q/k/v biases.
#   embedding 544,997,376; per layer 2*12,845,056 + 2*1,835,008 + biases (3584+512+512)
#   + 3*3584*18944 (203,685,888) + 7168 = 233,057,792; *28 = 6,525,618,176; + 3584
#   + 544,997,376  ->  7,615,616,512  ("7.61B" on the model card, 7.62B on the Hub)
# Llama-3.2-1B: V 128256, h 2048, 16 layers, 32/8 heads, d 64, I 8192, tied lm_head.
#   embedding 262,668,288; per layer 2*4,194,304 + 2*1,048,576 + 50,331,648 + 4096
#   = 60,821,504; *16 = 973,144,064; + 2048 (no lm_head)  ->  1,235,814,400  ("1.23B")
PUBLISHED = {
    "llama-3.1-8b": (8.03e9, 8_030_261_248),
    "llama-3.1-70b": (70.6e9, 70_553_706_496),
    "llama-2-7b": (6.74e9, 6_738_415_616),
    "mistral-7b-v0.1": (7.24e9, 7_241_732_096),
    "qwen2.5-7b": (7.62e9, 7_615_616_512),
    "llama-3.2-1b": (1.23e9, 1_235_814_400),
}


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_param_count_matches_published_size(key: str) -> None:
    published, exact = PUBLISHED[key]
    cfg = models.load(key)
    assert cfg.param_count == pytest.approx(published, rel=0.01)
    assert cfg.param_count == exact
    assert sum(cfg.param_breakdown().values()) == exact


def test_required_models_are_shipped() -> None:
    assert REQUIRED_MODELS <= set(models.list_models())


@pytest.mark.parametrize(
    ("key", "g", "kv_bytes"),
    [
        ("llama-3.1-8b", 4, 2 * 32 * 8 * 128 * 2),  # 131,072 B per token in bf16
        ("llama-3.1-70b", 8, 2 * 80 * 8 * 128 * 2),
        ("llama-2-7b", 1, 2 * 32 * 32 * 128 * 2),  # MHA: 4x Llama-3.1-8B's KV
        ("mistral-7b-v0.1", 4, 2 * 32 * 8 * 128 * 2),
        ("qwen2.5-7b", 7, 2 * 28 * 4 * 128 * 2),
        ("llama-3.2-1b", 4, 2 * 16 * 8 * 64 * 2),
    ],
)
def test_group_size_and_kv_bytes(key: str, g: int, kv_bytes: int) -> None:
    cfg = models.load(key)
    assert cfg.group_size == g
    assert cfg.kv_bytes_per_token() == kv_bytes
    assert cfg.kv_bytes_per_token("fp32") == 2 * kv_bytes


def test_weight_bytes_follow_dtype() -> None:
    cfg = models.load("llama-3.1-8b")
    assert cfg.dtype == "bf16"
    assert cfg.weight_bytes() == 2 * 8_030_261_248
    assert cfg.weight_bytes("fp32") == 4 * 8_030_261_248
    assert models.load("llama-2-7b").dtype == "fp16"  # as released on the Hub


# -- an independent counter: enumerate every tensor of a model and sum its sizes ---------------


def _brute_force_params(cfg: models.ModelConfig) -> int:
    h, d = cfg.hidden_size, cfg.head_dim
    shapes: list[tuple[int, ...]] = [(cfg.vocab_size, h)]
    for _ in range(cfg.layers):
        shapes += [(h,), (cfg.heads * d, h), (cfg.kv_heads * d, h), (cfg.kv_heads * d, h), (h, cfg.heads * d)]
        if cfg.attention_qkv_bias:
            shapes += [(cfg.heads * d,), (cfg.kv_heads * d,), (cfg.kv_heads * d,)]
        shapes += [(h,), (cfg.intermediate_size, h), (cfg.intermediate_size, h), (h, cfg.intermediate_size)]
    shapes.append((h,))
    if not cfg.tie_word_embeddings:
        shapes.append((cfg.vocab_size, h))
    return int(sum(np.prod(s, dtype=np.int64) for s in shapes))


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_param_count_equals_tensor_enumeration(key: str) -> None:
    cfg = models.load(key)
    assert cfg.param_count == _brute_force_params(cfg)


@settings(max_examples=40, deadline=None)
@given(
    layers=st.integers(1, 6),
    kv_heads=st.integers(1, 4),
    group=st.integers(1, 4),
    head_dim=st.sampled_from([8, 16, 64]),
    inter=st.integers(1, 512),
    vocab=st.integers(1, 1000),
    tie=st.booleans(),
    bias=st.booleans(),
)
def test_param_count_property(
    tmp_path_factory, layers, kv_heads, group, head_dim, inter, vocab, tie, bias
) -> None:
    raw = _raw(LLAMA_FILE)
    heads = kv_heads * group
    for field, value in [
        ("layers", layers),
        ("heads", heads),
        ("kv_heads", kv_heads),
        ("head_dim", head_dim),
        ("hidden_size", heads * head_dim),
        ("intermediate_size", inter),
        ("vocab_size", vocab),
    ]:
        raw[field]["value"] = value
    raw["tie_word_embeddings"]["value"] = tie
    raw["attention_qkv_bias"]["value"] = bias
    cfg = models.load(_write(tmp_path_factory.mktemp("m"), raw))
    assert cfg.param_count == _brute_force_params(cfg)
    assert cfg.group_size == group


# -- names -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("llama-3.1-8b", "llama-3.1-8b"),
        ("LLAMA-3.1-8B", "llama-3.1-8b"),
        ("meta-llama/Llama-3.1-8B", "llama-3.1-8b"),
        ("Qwen/Qwen2.5-7B", "qwen2.5-7b"),
        ("mistral-7b", "mistral-7b-v0.1"),
        ("meta-llama/Llama-2-7b-hf", "llama-2-7b"),
    ],
)
def test_names_and_aliases(name: str, key: str) -> None:
    assert models.load(name).key == key


@pytest.mark.parametrize("partial", ["llama", "8b", "llama-3.1", "qwen", "mistral", "llama-3.1-8", "7b"])
def test_no_substring_matching(partial: str) -> None:
    with pytest.raises(ValueError, match="not a known model"):
        models.load(partial)


def test_unknown_model_lists_known_ones() -> None:
    with pytest.raises(ValueError) as err:
        models.load("gpt-5")
    for key in REQUIRED_MODELS:
        assert key in str(err.value)


def test_aliases_do_not_collide() -> None:
    amap = models.aliases()
    assert set(amap.values()) <= set(models.list_models())
    assert not set(amap) & set(models.list_models())


def test_wrong_argument_type() -> None:
    with pytest.raises(TypeError):
        models.load(8)  # type: ignore[arg-type]


# -- files: sources, units, errors -------------------------------------------------------------

INT_UNITS = {
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
OPTIONAL_UNITS = {"sliding_window_layers": "count"}


@pytest.mark.parametrize("path", sorted(DATA_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_field_has_unit_and_source(path: Path) -> None:
    raw = _raw(path)
    assert raw["source"].startswith("https://huggingface.co/") and raw["source"].endswith("/config.json")
    tables = {k: v for k, v in raw.items() if isinstance(v, dict)}
    assert set(INT_UNITS) <= set(tables)
    for field, entry in tables.items():
        assert entry["source"].startswith(("https://huggingface.co/", "derived:")), field
        if isinstance(entry["value"], (int, float)) and not isinstance(entry["value"], bool):
            assert entry["unit"] == {**INT_UNITS, **OPTIONAL_UNITS}[field], field
    # each number's source points at this model's own config.json
    for field in INT_UNITS:
        assert raw["source"] in tables[field]["source"], field


@pytest.mark.parametrize(
    "field",
    [
        "layers",
        "heads",
        "kv_heads",
        "head_dim",
        "max_context",
        "dtype",
        "tie_word_embeddings",
        "attention_qkv_bias",
        "sliding_window",
        "source",
    ],
)
def test_missing_field_names_file_and_field(tmp_path: Path, field: str) -> None:
    raw = _raw(LLAMA_FILE)
    del raw[field]
    path = _write(tmp_path, raw)
    with pytest.raises(ValueError) as err:
        models.load(path)
    assert str(path) in str(err.value) and repr(field) in str(err.value)


def test_wrong_unit_is_an_error(tmp_path: Path) -> None:
    raw = _raw(LLAMA_FILE)
    raw["max_context"]["unit"] = "bytes"
    with pytest.raises(ValueError, match="max_context.*unit"):
        models.load(_write(tmp_path, raw))


def test_missing_source_is_an_error(tmp_path: Path) -> None:
    raw = _raw(LLAMA_FILE)
    del raw["vocab_size"]["source"]
    with pytest.raises(ValueError, match="vocab_size"):
        models.load(_write(tmp_path, raw))
    raw = _raw(LLAMA_FILE)
    raw["vocab_size"]["source"] = "memory"
    with pytest.raises(ValueError, match="vocab_size.*source"):
        models.load(_write(tmp_path, raw))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("heads", 30, "multiple of kv_heads"),
        ("layers", 0, "layers"),
        ("layers", 2.5, "layers"),
        ("dtype", "int4", "dtype"),
        ("mlp", "gelu", "mlp"),
        ("tie_word_embeddings", "no", "tie_word_embeddings"),
        ("sliding_window", 10**9, "sliding_window"),
    ],
)
def test_bad_values(tmp_path: Path, field: str, value: object, match: str) -> None:
    raw = _raw(LLAMA_FILE)
    raw[field]["value"] = value
    with pytest.raises(ValueError, match=match):
        models.load(_write(tmp_path, raw))


def test_unknown_field_is_rejected(tmp_path: Path) -> None:
    raw = _raw(LLAMA_FILE)
    raw["num_layers"] = raw["layers"]
    with pytest.raises(ValueError, match="num_layers"):
        models.load(_write(tmp_path, raw))


def test_load_user_model_by_path(tmp_path: Path) -> None:
    raw = _raw(LLAMA_FILE)
    raw["name"] = "Tiny"
    raw["layers"]["value"] = 2
    cfg = models.load(_write(tmp_path, raw, "tiny"))
    assert cfg.key == "tiny" and cfg.layers == 2 and cfg.name == "Tiny"


# -- context checks ----------------------------------------------------------------------------


def test_context_beyond_maximum_is_reported() -> None:
    cfg = models.load("llama-2-7b")
    assert cfg.check_context(4096) == 4096
    with pytest.raises(ValueError, match="exceeds the maximum context of Llama-2-7B"):
        cfg.check_context(8192)
    with pytest.raises(ValueError, match="exceeds"):
        cfg.check_context(np.array([1024, 4097]))
    with pytest.raises(ValueError, match="context"):
        cfg.check_context(0)


def test_sliding_window_bounds_attended_tokens() -> None:
    mistral = models.load("mistral-7b-v0.1")
    np.testing.assert_array_equal(mistral.attended_tokens([100, 4096, 32768]), [100, 4096, 4096])
    llama = models.load("llama-3.1-8b")
    np.testing.assert_array_equal(llama.attended_tokens([100, 131072]), [100, 131072])


# -- provenance and display --------------------------------------------------------------------


def test_to_dict_describe_and_sources() -> None:
    cfg = models.load("qwen2.5-7b")
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["derived"]["param_count"] == 7_615_616_512
    assert d["fields"]["kv_heads"] == {
        "value": 4,
        "unit": "count",
        "source": "https://huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json (num_key_value_heads)",
    }
    assert cfg.source_of("attention_qkv_bias").startswith("https://huggingface.co/Qwen/")
    with pytest.raises(ValueError, match="known fields"):
        cfg.source_of("num_layers")
    text = cfg.describe()
    assert "Qwen2.5-7B" in text and "7.616 B" in text and "group size g" in text


def test_configs_are_frozen() -> None:
    cfg = models.load("llama-3.1-8b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.layers = 1  # type: ignore[misc]
    assert hash(cfg) == hash(models.load("meta-llama/llama-3.1-8b"))
