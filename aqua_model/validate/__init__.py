"""The validation layer: predicted against measured on a GPU (or the CPU in CI).

- :mod:`.cases`: the case grids (which plan at which shape);
- :mod:`.workloads`: each plan's declared implementation run on random inputs, with its
  float32 check (references from :mod:`aqua_model.kernels.reference`);
- :mod:`.timing`: CUDA-event / do_bench / CPU timers, L2 flushed, CUDA graphs;
- :mod:`.microbench`: the calibration micro-benchmarks and the calibrated profile;
- :mod:`.runner`: run cases, stream one JSONL row per case, re-predict; :mod:`.rows`: the row
  schema; :mod:`.report`: errors, speedup ratios, targets.
"""
