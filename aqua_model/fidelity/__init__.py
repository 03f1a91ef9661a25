"""Approximation quality of AQUA and its peers (SparQ, Loki, random dims) against k.

- :mod:`~aqua_model.fidelity.synthetic`: queries/keys with a known spectrum, for tests;
- :mod:`~aqua_model.fidelity.methods`: per-method dimension selection and approximate scores;
- :mod:`~aqua_model.fidelity.metrics`: energy, score/output error, top-1/top-8 agreement, KL;
- :mod:`~aqua_model.fidelity.study`: calibrate per layer/head, sweep k, stream rows, aggregate;
- :mod:`~aqua_model.fidelity.activations`: offline all-MiniLM-L6-v2 capture through transformers;
- :mod:`~aqua_model.fidelity.decoder`: perplexity, top-1 and KL of a decoder run through
  :mod:`aqua_model.integrations.transformers`, streamed per segment, with bootstrap CIs.

Only numpy is needed to import this package; calibration needs torch, capture transformers.
"""

from aqua_model.fidelity.methods import METHODS
from aqua_model.fidelity.metrics import METRICS, fidelity_metrics
from aqua_model.fidelity.study import aggregate, decode_byte_ratio, run_study

__all__ = ["METHODS", "METRICS", "aggregate", "decode_byte_ratio", "fidelity_metrics", "run_study"]
