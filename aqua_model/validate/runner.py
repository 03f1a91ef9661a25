"""Run validation cases: measure each plan's kernels, predict them, stream one JSONL row per case.

Rows are appended, flushed and fsync'ed as each case finishes, so a crash loses no finished
case; a rerun on the same file skips every case id already there (a torn last line from a
crash is cut off first). A case that runs out of memory is recorded with status ``oom`` after
``torch.cuda.empty_cache()``; one the kernels cannot express is ``unsupported``; one over the
memory budget is ``skipped`` up front; any other failure is ``error`` with its message.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

from aqua_model._checks import check_choice, check_real
from aqua_model.hardware import HardwareProfile
from aqua_model.plans import build_plan
from aqua_model.plans.attention import LEGACY_PLAN_NAMES
from aqua_model.simulator import predict
from aqua_model.simulator.intervals import speedup_bounds
from aqua_model.simulator.roofline import floor_time_s
from aqua_model.validate.cases import CASE_FIELDS, Case
from aqua_model.validate.rows import STATUSES as ROW_STATUSES, read_results
from aqua_model.validate.timing import DEFAULT_REP_MS, DEFAULT_WARMUP_MS, time_fn

#: The dense baseline of every predicted speedup.
BASELINE_PLAN = "dense-fused"
#: Prediction fields a re-prediction recomputes.
PREDICTION_FIELDS = (
    "predicted_datasheet_s",
    "predicted_calibrated_s",
    "predicted_calibrated_low_s",
    "predicted_calibrated_high_s",
    "predicted_speedup_calibrated",
    "predicted_speedup_low",
    "predicted_speedup_high",
    "datasheet_mode",
    "calibrated_mode",
    "roofline_floor_s",
    "flops",
    "bytes",
)

#: Schema version of a result row. 2 (issue 11): plans have their current names; rows of schema
#: 1 name decode plans as :data:`aqua_model.plans.attention.LEGACY_PLAN_NAMES` lists, and
#: :func:`read_rows` maps them on reading (the files themselves are never edited).
ROW_SCHEMA_VERSION = 2
#: Row statuses (their home is the row schema).
STATUSES: tuple[str, ...] = ROW_STATUSES
#: Seed base of the random inputs (each shape adds a stable hash of its key).
SEED_BASE = 20261128
#: Seconds the nvidia-smi query for the driver version may take.
NVIDIA_SMI_TIMEOUT_S = 10.0

Measure = Callable[[Case], dict[str, Any]]


# -- environment ---------------------------------------------------------------------------------


def environment(device: str) -> dict[str, Any]:
    """Device, driver, torch, triton, CUDA versions and the UTC date."""
    import platform

    env: dict[str, Any] = {
        "device": device,
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["cuda"] = torch.version.cuda or "none"
        if device == "cuda":
            env["gpu"] = torch.cuda.get_device_name()
            props = torch.cuda.get_device_properties(0)
            env["sm_count"] = props.multi_processor_count
            env["gpu_memory_bytes"] = props.total_memory
        else:
            env["gpu"] = "none"
            env["cpu"] = platform.processor() or platform.machine()
            env["threads"] = torch.get_num_threads()
    except ImportError:
        env["torch"] = "missing"
    try:
        import triton

        env["triton"] = triton.__version__
    except Exception:
        env["triton"] = "missing"
    env["driver"] = _driver_version() if device == "cuda" else "none"
    return env


def _driver_version() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT_S,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except Exception as exc:  # no nvidia-smi, or it failed: say so, never guess
        return f"unknown ({type(exc).__name__})"


# -- predictions -----------------------------------------------------------------------------------


def predictions(case: Case, datasheet: HardwareProfile, calibrated: HardwareProfile | None) -> dict[str, Any]:
    """Both modes' predicted totals and per-kernel tables, and the datasheet roofline floor."""
    kw: dict[str, Any] = dict(
        phase=case.phase,
        context=case.context,
        batch=case.batch,
        heads_q=case.heads_q,
        heads_kv=case.heads_kv,
        d=case.d,
        k=case.k,
        dtype=case.dtype,
        prompt=case.prompt,
        selection=case.selection,
    )
    ds = predict(plan=case.plan, gpu=datasheet, **kw)
    cal = predict(plan=case.plan, gpu=calibrated, **kw) if calibrated is not None else None
    speedup: dict[str, Any] = {}
    if cal is not None and case.plan.startswith("aqua"):
        assert calibrated is not None  # cal is predicted only from a calibrated profile
        # the predicted speedup over dense-fused at the same shape, and its frozen interval
        dense = predict(plan=BASELINE_PLAN, gpu=calibrated, **{**kw, "k": case.d, "selection": "group"})
        sp = dense.total_s / cal.total_s
        bounds = speedup_bounds(calibrated, case.phase, case.plan, sp)
        speedup = {
            "predicted_speedup_calibrated": sp,
            "predicted_speedup_low": None if bounds is None else float(bounds[0]),
            "predicted_speedup_high": None if bounds is None else float(bounds[1]),
        }
    units = {
        kern.name: kern.unit
        for kern in build_plan(case.plan, phase=case.phase, selection=case.selection).kernels
    }
    kernels = []
    floor = 0.0
    for i, kd in enumerate(ds.kernels):
        k_floor = float(
            floor_time_s(
                kd["flops"], kd["bytes"], datasheet, unit=units.get(kd["name"], "matrix"), dtype=case.dtype
            )
        )
        floor += k_floor
        kernels.append(
            {
                "name": kd["name"],
                "pattern": kd["pattern"],
                "flops": kd["flops"],
                "bytes": kd["bytes"],
                "unit": units.get(kd["name"]),
                "predicted_datasheet_s": kd["time_s"],
                "bound_datasheet": kd["bound"],
                "predicted_calibrated_s": cal.kernels[i]["time_s"] if cal else None,
                "bound_calibrated": cal.kernels[i]["bound"] if cal else None,
                "roofline_floor_s": k_floor,
            }
        )
    return {
        "predicted_datasheet_s": ds.total_s,
        "predicted_calibrated_s": cal.total_s if cal else None,
        "predicted_calibrated_low_s": cal.low_s if cal else None,
        "predicted_calibrated_high_s": cal.high_s if cal else None,
        **speedup,
        "datasheet_mode": ds.mode,
        "calibrated_mode": cal.mode if cal else None,
        "roofline_floor_s": floor,
        "flops": sum(k["flops"] for k in kernels),
        "bytes": sum(k["bytes"] for k in kernels),
        "kernels": kernels,
    }


# -- measurement -----------------------------------------------------------------------------------


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory error from torch (CUDA or CPU) or Python."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class Measurer:
    """Measures cases on one device, keeping one shape's random inputs between cases."""

    def __init__(
        self,
        device: str,
        *,
        warmup_ms: float = DEFAULT_WARMUP_MS,
        rep_ms: float = DEFAULT_REP_MS,
        graph: bool = True,
    ) -> None:
        self.device = check_choice("device", device, ("cpu", "cuda"))
        self.graph = bool(graph)
        self.warmup_ms = check_real("warmup_ms", warmup_ms, minimum=0.0)
        self.rep_ms = check_real("rep_ms", rep_ms, minimum=0.0, strict_minimum=True)
        self._key: tuple[Any, ...] | None = None
        self._inputs: Any = None

    def release(self) -> None:
        """Drop the cached inputs and return the memory to the device."""
        self._key, self._inputs = None, None
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _inputs_for(self, case: Case) -> Any:
        import torch

        from aqua_model.validate import workloads as wl

        dev = torch.device(self.device)
        seed = SEED_BASE + zlib.crc32(repr(case.shape_key).encode()) % (1 << 20)
        layouts = wl.layouts_for(case)
        if self._key != case.shape_key:
            self.release()
            self._inputs = wl.make_inputs(case, device=dev, seed=seed, layouts=layouts)
            self._key = case.shape_key
        else:
            wl.set_layouts(self._inputs, case, device=dev, seed=seed, layouts=layouts)
            if self.device == "cuda":
                torch.cuda.empty_cache()
        return self._inputs

    def __call__(self, case: Case) -> dict[str, Any]:
        """Time ``case``'s plan end to end and kernel by kernel; check its output first."""
        import torch

        from aqua_model.validate import workloads as wl

        inp = self._inputs_for(case)
        work = wl.build(case, inp)
        # correctness, untimed: poison the output, run, compare a slice with float32
        if work.out is not None:
            work.out.fill_(float("nan"))
        out, ref = work.reference()
        rel = wl.relative_error(out, ref)
        close = wl.fraction_close(out, ref)
        if work.out is not None and not bool(torch.isfinite(work.out).all()):
            raise RuntimeError("output check failed: the plan left unwritten (NaN) elements in its output")
        if not close >= wl.CHECK_MIN_FRACTION:
            raise RuntimeError(
                f"output check failed: only {close:.2f} of output vectors within {wl.CHECK_TOLERANCE} "
                f"of the float32 reference (overall relative error {rel:.3g})"
            )
        # timing: poison again, time the whole plan, check the output after the timed calls
        if work.out is not None:
            work.out.fill_(float("nan"))
        total = time_fn(
            work.total, device=self.device, warmup_ms=self.warmup_ms, rep_ms=self.rep_ms, graph=self.graph
        )
        if work.out is not None and not bool(torch.isfinite(work.out).all()):
            raise RuntimeError("output check failed after timing: NaN left in the output")
        eager = total
        if self.graph and self.device == "cuda":  # the same plan launched from Python, for the host overhead
            eager = time_fn(work.total, device=self.device, warmup_ms=self.warmup_ms, rep_ms=self.rep_ms)
        kernels = {}
        for name, fn in work.kernels:
            t = time_fn(
                fn, device=self.device, warmup_ms=self.warmup_ms, rep_ms=self.rep_ms, graph=self.graph
            )
            kernels[name] = {"measured_s": t.median_s, "measured_iqr_s": t.iqr_s}
        return {
            "measured_s": total.median_s,
            "measured_iqr_s": total.iqr_s,
            "measured_q25_s": total.q25_s,
            "measured_q75_s": total.q75_s,
            "timing_method": total.method,
            "cache_policy": total.cache_policy,
            "measured_eager_s": eager.median_s,
            "measured_eager_iqr_s": eager.iqr_s,
            "eager_timing_method": eager.method,
            "check_rel_error": rel,
            "check_fraction_close": close,
            "measured_kernels": kernels,
            "notes": work.notes,
        }


# -- results file ----------------------------------------------------------------------------------


def repair_tail(path: Path) -> None:
    """Cut a torn last line (a crash mid-write) so appended rows start on a fresh line."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        fh.seek(cut)
        fh.truncate()


def current_names(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its plan under its current name: a schema-1 decode row of a plan in
    :data:`~aqua_model.plans.attention.LEGACY_PLAN_NAMES` gets the new name in ``plan`` and
    ``case_id`` and keeps the old one as ``legacy_plan``; any other row is returned as it is."""
    old = row.get("plan")
    if row.get("schema_version", 1) >= 2 or row.get("phase") != "decode" or old not in LEGACY_PLAN_NAMES:
        return row
    new = LEGACY_PLAN_NAMES[old]
    out = {**row, "plan": new, "legacy_plan": old}
    if isinstance(row.get("case_id"), str):
        out["case_id"] = row["case_id"].replace(f"decode/{old}/", f"decode/{new}/", 1)
    return out


def read_rows(path: str | os.PathLike[str], *, lenient: bool = False) -> list[dict[str, Any]]:
    """Every row of a results file, checked against the row schema (:mod:`.rows`: a torn last
    line is ignored, any other bad line raises unless ``lenient``), with legacy plan names mapped
    to the current ones (:func:`current_names`)."""
    return [current_names(row) for row in read_results(path, lenient=lenient).rows]


def done_ids(path: Path) -> set[str]:
    """Case ids already recorded in ``path`` (empty when the file does not exist)."""
    return {r["case_id"] for r in read_rows(path) if "case_id" in r} if path.exists() else set()


def _append(fh: Any, row: dict[str, Any]) -> None:
    fh.write(json.dumps(row, default=_json_default, allow_nan=True) + "\n")
    fh.flush()
    os.fsync(fh.fileno())


def _json_default(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return str(x)


class _Progress:
    """tqdm when importable, else one line per case on stderr."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.n, self.enabled, self.bar = total, 0, enabled, None
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="case", file=sys.stderr, dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, text: str) -> None:
        self.n += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(text[-70:], refresh=False)
            self.bar.update(1)
        else:
            print(f"[{self.n}/{self.total}] {text}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _merge_kernels(pred: dict[str, Any], measured: dict[str, Any] | None) -> list[dict[str, Any]]:
    kernels = [dict(k) for k in pred.get("kernels", [])]
    measured = measured or {}
    for k in kernels:
        m = measured.get(k["name"], {})
        k["measured_s"] = m.get("measured_s")
        k["measured_iqr_s"] = m.get("measured_iqr_s")
    known = {k["name"] for k in kernels}
    for name, m in measured.items():  # a measured kernel the plan does not name
        if name not in known:
            kernels.append(
                {
                    "name": name,
                    "measured_s": m.get("measured_s"),
                    "measured_iqr_s": m.get("measured_iqr_s"),
                    "predicted_datasheet_s": None,
                    "predicted_calibrated_s": None,
                    "flops": None,
                    "bytes": None,
                }
            )
    return kernels


def make_row(
    case: Case,
    *,
    status: str,
    env: dict[str, Any],
    pred: dict[str, Any],
    measured: dict[str, Any] | None,
    error: str | None = None,
    wall_s: float = 0.0,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One results row (see the module docstring for the fields); ``extra`` fields (the frozen
    model's commit and fingerprint, the held-out seed, the case source) are added as they are."""
    check_choice("status", status, STATUSES)
    m = measured or {}
    row: dict[str, Any] = {"schema_version": ROW_SCHEMA_VERSION, **case.to_dict(), "status": status}
    row.update(
        {
            "measured_s": m.get("measured_s"),
            "measured_iqr_s": m.get("measured_iqr_s"),
            "measured_q25_s": m.get("measured_q25_s"),
            "measured_q75_s": m.get("measured_q75_s"),
            "measured_eager_s": m.get("measured_eager_s"),
            "measured_eager_iqr_s": m.get("measured_eager_iqr_s"),
            "eager_timing_method": m.get("eager_timing_method"),
            **{key: pred.get(key) for key in PREDICTION_FIELDS[:7]},
            "datasheet_mode": pred.get("datasheet_mode"),
            "calibrated_mode": pred.get("calibrated_mode"),
            "roofline_floor_s": pred.get("roofline_floor_s"),
            "flops": pred.get("flops"),
            "bytes": pred.get("bytes"),
            "timing_method": m.get("timing_method"),
            "cache_policy": m.get("cache_policy"),
            "check_rel_error": m.get("check_rel_error"),
            "check_fraction_close": m.get("check_fraction_close"),
            "kernels": _merge_kernels(pred, m.get("measured_kernels")),
            "notes": m.get("notes", []),
            "error": error,
            "skip_reason": case.skip_reason,
            "wall_s": wall_s,
            "env": env,
        }
    )
    row.update(extra or {})
    return row


def run_cases(
    cases: Iterable[Case],
    *,
    out_path: str | os.PathLike[str],
    datasheet: HardwareProfile,
    calibrated: HardwareProfile | None,
    device: str,
    measure: Measure | None = None,
    deadline_s: float | None = None,
    max_cases: int | None = None,
    progress: bool = True,
    env: dict[str, Any] | None = None,
    row_extra: dict[str, Any] | None = None,
) -> dict[str, int]:
    """Run every case not yet in ``out_path``; returns counts per status (and "resumed").

    ``measure(case) -> dict`` defaults to a :class:`Measurer` on ``device``; ``deadline_s``
    stops starting new cases after that many seconds (a rerun resumes); ``max_cases`` caps the
    number of new cases attempted.
    """
    check_choice("device", device, ("cpu", "cuda"))
    path = Path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    repair_tail(path)
    done = done_ids(path)
    todo = [c for c in cases if c.case_id not in done]
    if max_cases is not None:
        todo = todo[:max_cases]
    measurer = measure or Measurer(device)
    env = env or environment(device)
    counts = {s: 0 for s in STATUSES}
    counts["resumed"] = len(done)
    counts["not_started"] = 0
    t_start = time.monotonic()
    bar = _Progress(len(todo), progress)
    try:
        with path.open("a") as fh:
            for i, case in enumerate(todo):
                if deadline_s is not None and time.monotonic() - t_start > deadline_s:
                    counts["not_started"] = len(todo) - i
                    print(
                        f"deadline of {deadline_s:.0f} s reached: {len(todo) - i} cases not started; "
                        "rerun the same command to resume",
                        file=sys.stderr,
                    )
                    break
                t0 = time.monotonic()
                try:
                    pred = predictions(case, datasheet, calibrated)
                    pred_error = None
                except Exception as exc:  # a plan the model cannot predict is still measured
                    pred, pred_error = {}, f"prediction failed: {type(exc).__name__}: {exc}"
                status, measured, error = _measure_one(case, measurer)
                if pred_error:
                    error = pred_error if error is None else f"{error}; {pred_error}"
                row = make_row(
                    case,
                    status=status,
                    env=env,
                    pred=pred,
                    measured=measured,
                    error=error,
                    wall_s=time.monotonic() - t0,
                    extra=row_extra,
                )
                _append(fh, row)
                counts[status] += 1
                bar.update(_progress_text(row))
    finally:
        bar.close()
        if isinstance(measurer, Measurer):
            measurer.release()
    return counts


def _measure_one(case: Case, measurer: Measure) -> tuple[str, dict[str, Any] | None, str | None]:
    from aqua_model.validate.workloads import Unsupported

    if case.skip_reason:
        return "skipped", None, None
    try:
        return "ok", measurer(case), None
    except Unsupported as exc:
        return "unsupported", None, str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded in the row, never swallowed silently
        status = "oom" if is_oom(exc) else "error"
        message = f"{type(exc).__name__}: {str(exc)[:500]}"
    # outside the except block, so the traceback no longer pins the failed case's tensors
    _free_memory(measurer)
    return status, None, message


def _free_memory(measurer: Measure) -> None:
    if isinstance(measurer, Measurer):
        measurer.release()
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _progress_text(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return f"{row['case_id']} {row['status']}"
    pred = row.get("predicted_calibrated_s") or row.get("predicted_datasheet_s")
    ptxt = f" pred {pred * 1e3:.3f} ms" if pred else ""
    return f"{row['case_id']} {row['measured_s'] * 1e3:.3f} ms{ptxt}"


# -- several runs ----------------------------------------------------------------------------------


def merge_runs(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows of several runs of one grid, in first-seen case order: a measured ("ok") row of a
    later run replaces the earlier row of the same case; other rows never replace a row."""
    merged: dict[str, dict[str, Any]] = {}
    for rows in runs:
        for row in rows:
            case_id = row.get("case_id")
            if case_id not in merged or row.get("status") == "ok":
                merged[cast(str, case_id)] = row
    return list(merged.values())


# -- re-prediction ---------------------------------------------------------------------------------


def repredict_rows(
    rows: list[dict[str, Any]], *, datasheet: HardwareProfile, calibrated: HardwareProfile | None
) -> list[dict[str, Any]]:
    """The same measurements with every prediction recomputed by the current model.

    Measurements are facts of the run; predictions belong to the model. Re-predicting lets a
    model change be judged against fixed measurements without re-running the GPU. Rows that
    describe no valid case (skipped, errors) are returned unchanged.
    """
    out = []
    for row in rows:
        try:
            case = Case(**{f: row[f] for f in CASE_FIELDS})
        except (KeyError, TypeError, ValueError):
            out.append(row)
            continue
        pred = predictions(case, datasheet, calibrated)
        measured = {
            kern["name"]: {"measured_s": kern.get("measured_s"), "measured_iqr_s": kern.get("measured_iqr_s")}
            for kern in row.get("kernels", [])
            if kern.get("measured_s") is not None
        }
        new = dict(row)
        for key in PREDICTION_FIELDS:
            if key in pred or key in new:
                new[key] = pred.get(key)
        new["kernels"] = _merge_kernels(pred, measured)
        out.append(new)
    return out
