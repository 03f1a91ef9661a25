"""Any Hugging Face model by its config.json: the mapping, the bundled models written from the
published configs (tests/data/hf_configs/, sources in SOURCES.md), their parameter counts
against the published sizes, the errors for what cannot be mapped, and `aqua-model models`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import aqua_model
from aqua_model import models
from aqua_model.cli import main

HF = Path(__file__).resolve().parent / "data" / "hf_configs"
NEW_MODELS = (
    "llama-3.2-3b",
    "qwen2.5-0.5b",
    "qwen2.5-14b",
    "qwen2.5-32b",
    "mistral-nemo-12b",
    "gemma-2-9b",
    "smollm2-135m",
)

# Published parameter counts (the 1% check) and the exact count derived by hand from the config.
# Per layer: q h*Hq*d, k and v h*Hkv*d each, o Hq*d*h, q/k/v biases (Qwen2), gated MLP 3*h*I,
# RMSNorm vectors (2 per layer, Gemma-2: 4); plus embedding V*h, final norm h, lm_head V*h unless tied.
#
# Llama-3.2-3B (h 3072, 28 layers, 24/8 heads, d 128, I 8192, V 128256, tied): per layer
#   9,437,184 + 2*3,145,728 + 9,437,184 + 75,497,472 + 6144 = 100,669,440; *28 = 2,818,744,320;
#   + 394,002,432 + 3072 = 3,212,749,824. Published: "3.21B" (Meta's Llama 3.2 model card).
# Qwen2.5-0.5B (h 896, 24 layers, 14/2 heads, d 64, I 4864, V 151936, tied, biases): per layer
#   802,816 + 2*114,688 + 802,816 + (896 + 2*128) + 13,074,432 + 1792 = 14,912,384; *24 = 357,897,216;
#   + 136,134,656 + 896 = 494,032,768. Published: "0.49B" (Qwen2.5-0.5B model card).
# Qwen2.5-14B (h 5120, 48 layers, 40/8 heads, d 128, I 13824, V 152064, untied, biases): per layer
#   2*26,214,400 + 2*5,242,880 + 7168 + 212,336,640 + 10240 = 275,268,608; *48 = 13,212,893,184;
#   + 2*778,567,680 + 5120 = 14,770,033,664. Published: "14.7B" (Qwen2.5-14B model card).
# Qwen2.5-32B (as 14B with 64 layers, I 27648): per layer 62,921,728 + 424,673,280 + 10240
#   = 487,605,248; *64 = 31,206,735,872; + 1,557,135,360 + 5120 = 32,763,876,352.
#   Published: "32.5B" (Qwen2.5-32B model card; 0.8% below the count, inside 1%).
# Mistral-Nemo-Base-2407 (h 5120, 40 layers, 32/8 heads, d 128 explicit, I 14336, V 131072, untied):
#   per layer 20,971,520 + 2*5,242,880 + 20,971,520 + 220,200,960 + 10240 = 272,640,000; *40
#   = 10,905,600,000; + 2*671,088,640 + 5120 = 12,247,782,400. Published: "12.2B params" (Hub page).
# Gemma-2-9B (h 3584, 42 layers, 16/8 heads, d 256, I 14336, V 256000, tied, 4 norms): per layer
#   14,680,064 + 2*7,340,032 + 14,680,064 + 154,140,672 + 4*3584 = 198,195,200; *42 = 8,324,198,400;
#   + 917,504,000 + 3584 = 9,241,705,984. Published: "9.24B params" (Hub page).
# SmolLM2-135M (h 576, 30 layers, 9/3 heads, d 64, I 1536, V 49152, tied): per layer
#   331,776 + 2*110,592 + 331,776 + 2,654,208 + 1152 = 3,540,096; *30 = 106,202,880;
#   + 28,311,552 + 576 = 134,515,008. Published: "135M" (SmolLM2 model card).
PUBLISHED = {
    "llama-3.2-3b": (3.21e9, 3_212_749_824),
    "qwen2.5-0.5b": (0.49e9, 494_032_768),
    "qwen2.5-14b": (14.7e9, 14_770_033_664),
    "qwen2.5-32b": (32.5e9, 32_763_876_352),
    "mistral-nemo-12b": (12.2e9, 12_247_782_400),
    "gemma-2-9b": (9.24e9, 9_241_705_984),
    "smollm2-135m": (135e6, 134_515_008),
}
COMPARED = (
    "layers",
    "hidden_size",
    "heads",
    "kv_heads",
    "head_dim",
    "intermediate_size",
    "vocab_size",
    "max_context",
    "sliding_window",
    "sliding_window_layers",
    "dtype",
    "tie_word_embeddings",
    "attention_qkv_bias",
    "mlp",
    "norm",
    "rope_scaling",
)


@pytest.mark.parametrize("key", NEW_MODELS)
def test_config_json_maps_to_the_bundled_model(key):
    mapped = models.load(str(HF / f"{key}.json"))
    bundled = models.load(key)
    for field in COMPARED:
        assert getattr(mapped, field) == getattr(bundled, field), field
    assert mapped.param_count == bundled.param_count


@pytest.mark.parametrize("key", sorted(PUBLISHED))
def test_param_count_from_the_config_matches_the_published_size(key):
    published, exact = PUBLISHED[key]
    cfg = models.load(HF / f"{key}.json")  # a PathLike works too
    assert cfg.param_count == exact
    assert cfg.param_count == pytest.approx(published, rel=0.01)


def _brute_force_params(cfg: models.ModelConfig) -> int:
    """Every tensor of the model enumerated, sizes summed (an independent counter)."""
    h, d = cfg.hidden_size, cfg.head_dim
    norms = {"rmsnorm": 2, "rmsnorm-pre-post": 4}[cfg.norm]
    shapes: list[tuple[int, ...]] = [(cfg.vocab_size, h)]
    for _ in range(cfg.layers):
        shapes += [(h,)] * norms
        shapes += [(cfg.heads * d, h), (cfg.kv_heads * d, h), (cfg.kv_heads * d, h), (h, cfg.heads * d)]
        if cfg.attention_qkv_bias:
            shapes += [(cfg.heads * d,), (cfg.kv_heads * d,), (cfg.kv_heads * d,)]
        shapes += [(cfg.intermediate_size, h), (cfg.intermediate_size, h), (h, cfg.intermediate_size)]
    shapes.append((h,))
    if not cfg.tie_word_embeddings:
        shapes.append((cfg.vocab_size, h))
    return int(sum(np.prod(s, dtype=np.int64) for s in shapes))


@pytest.mark.parametrize("key", NEW_MODELS)
def test_param_count_equals_tensor_enumeration(key):
    cfg = models.load(key)
    assert cfg.param_count == _brute_force_params(cfg)


def test_every_new_model_names_its_source():
    for key in NEW_MODELS:
        cfg = models.load(key)
        assert cfg.source.startswith("https://huggingface.co/") and cfg.source.endswith("/config.json")
        assert all(src.startswith(("https://huggingface.co/", "derived:")) for src in cfg.sources.values())
    sources = (HF / "SOURCES.md").read_text()
    for key in NEW_MODELS:
        assert f"`{key}.json`" in sources and models.load(key).source in sources


def test_gemma2_alternates_sliding_window_and_global_layers():
    cfg = models.load("gemma-2-9b")
    # Gemma2DecoderLayer: is_sliding = not bool(layer_idx % 2): layers 0, 2, ..., 40 -> 21 of 42
    assert (cfg.sliding_window, cfg.sliding_window_layers, cfg.sliding_window_pattern) == (4096, 21, "mixed")
    assert (cfg.mlp, cfg.norm, cfg.tie_word_embeddings) == ("geglu", "rmsnorm-pre-post", True)
    mistral = models.load("mistral-7b-v0.1")
    assert (mistral.sliding_window_layers, mistral.sliding_window_pattern) == (
        32,
        "all",
    )  # the documented default


def test_gemma2_end_to_end_sums_windowed_and_global_layers():
    cfg = models.load("gemma-2-9b").serving(dtype="bf16")
    kw = dict(gpu="h200", k=64, batch=4)
    e2e = aqua_model.end_to_end(model=cfg, context=8000, **kw)
    full = aqua_model.simulate(model=cfg, context=8000, **kw)
    windowed = aqua_model.simulate(model=cfg, context=4096, **kw)  # min(8000, 4096) keys
    assert e2e.dense_attention_s == pytest.approx(
        21 * full.dense.time_s + 21 * windowed.dense.time_s, rel=1e-12
    )
    assert e2e.aqua_attention_s == pytest.approx(21 * full.aqua.time_s + 21 * windowed.aqua.time_s, rel=1e-12)
    # below the window both kinds attend to every key: the layers are alike
    short = aqua_model.end_to_end(model=cfg, context=2048, **kw)
    assert short.dense_attention_s == pytest.approx(42 * short.simulation.dense.time_s, rel=1e-12)


def test_mapping_reads_defaults_and_notes(tmp_path):
    raw = json.loads((HF / "llama-3.2-3b.json").read_text())
    del raw["num_key_value_heads"], raw["head_dim"], raw["tie_word_embeddings"]
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(raw))
    cfg = models.load(str(folder))  # a folder holding a config.json
    assert cfg.kv_heads == cfg.heads == 24  # absent: multi-head attention
    assert cfg.head_dim == 3072 // 24
    assert cfg.tie_word_embeddings is False  # LlamaConfig's default
    assert "absent" in cfg.source_of("tie_word_embeddings")
    assert cfg.rope_scaling == "llama3, factor 32.0, original_max_position_embeddings 8192"
    assert "RoPE scaling" in cfg.notes and cfg.name == "my-model"


def test_qwen2_sliding_window_only_with_use_sliding_window(tmp_path):
    raw = json.loads((HF / "qwen2.5-14b.json").read_text())
    raw.update(use_sliding_window=True, sliding_window=4096, max_window_layers=28)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    cfg = models.load(path)
    assert (cfg.sliding_window, cfg.sliding_window_layers) == (4096, 48 - 28)
    raw["layer_types"] = ["sliding_attention"] * 10 + ["full_attention"] * 38
    path.write_text(json.dumps(raw))
    assert models.load(path).sliding_window_layers == 10


@pytest.mark.parametrize(
    "change,fragment",
    [
        ({"model_type": "gpt_neox"}, "field 'model_type' is 'gpt_neox'"),
        ({"num_hidden_layers": None}, "missing required field 'num_hidden_layers'"),
        ({"num_attention_heads": 24.0}, "field 'num_attention_heads' must be an integer >= 1, got 24.0"),
        ({"num_key_value_heads": 5}, "must be a multiple of num_key_value_heads (5)"),
        (
            {"torch_dtype": "int8"},
            "field 'torch_dtype' must be one of bfloat16, float16, float32, got 'int8'",
        ),
        ({"hidden_act": "relu"}, "field 'hidden_act' must be one of"),
        ({"num_local_experts": 8}, "field 'num_local_experts' = 8 describes a mixture of experts"),
        ({"mlp_bias": True}, "field 'mlp_bias' is true"),
        ({"tie_word_embeddings": "yes"}, "field 'tie_word_embeddings' must be true or false"),
        ({"rope_scaling": 4}, "field 'rope_scaling' must be an object or null"),
    ],
)
def test_unmappable_field_is_named(tmp_path, change, fragment):
    raw = json.loads((HF / "llama-3.2-3b.json").read_text())
    raw.update(change)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError) as err:
        models.load(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def test_bad_files_and_folders(tmp_path):
    with pytest.raises(ValueError, match="holds no config.json"):
        models.load(str(tmp_path))
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a JSON object"):
        models.load(str(tmp_path))
    (tmp_path / "config.json").write_text("{nope")
    with pytest.raises(ValueError, match="not valid JSON"):
        models.load(str(tmp_path / "config.json"))
    with pytest.raises(ValueError, match="does not exist"):
        models.load(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="neither a known model nor an existing file or folder"):
        models.load("/nonexistent/model")


def test_aliases_with_a_slash_are_names_not_paths():
    assert models.load("google/gemma-2-9b").key == "gemma-2-9b"
    assert models.load("Qwen/Qwen2.5-0.5B").key == "qwen2.5-0.5b"


def test_simulate_accepts_a_config_json(capsys):
    code = main(
        ["simulate", "--model", str(HF / "smollm2-135m.json"), "--context", "4096", "--k", "32", "--json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["model"] == "smollm2-135m"  # the file stem names a renamed config
    bundled = aqua_model.simulate(gpu="h200", model="smollm2-135m", context=4096, k=32)
    assert data["speedup"] == pytest.approx(float(bundled.speedup), rel=1e-12)


def test_models_list_and_show(capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for key in NEW_MODELS:
        assert key in out
    assert "4096 (21/42)" in out  # Gemma-2's alternating window
    assert main(["models", "show", "gemma-2-9b"]) == 0
    out = capsys.readouterr().out
    assert (
        "sliding_window_layers" in out
        and "9.242 B" in out
        and "https://huggingface.co/google/gemma-2-9b" in out
    )
    assert main(["models", "show", str(HF / "qwen2.5-0.5b.json"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["derived"]["param_count"] == 494_032_768
    assert main(["models", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nope' is not a known model" in err
