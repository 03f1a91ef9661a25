"""``aqua-model validate``: calibrate a device, run the validation cases, report the errors.

    aqua-model validate calibrate --out PROFILE.toml [--device cpu|cuda] [--quick] [--base KEY]
    aqua-model validate run --profile PROFILE.toml --out results.jsonl [--device ...] [--max-cases N]
                            [--cpu-small] [--deadline-s S]
    aqua-model validate report results.jsonl [--markdown summary.md] [--no-cases] [--lenient]
                            [--heldout heldout.jsonl --heldout-markdown heldout.md --status-out plan_status.toml]
    aqua-model validate sample --seed S --n N --out cases.jsonl
    aqua-model validate run --profile PROFILE.toml --cases cases.jsonl --out heldout-S.jsonl
    aqua-model validate intervals --profile PROFILE.toml --results insample.jsonl --out PROFILE.toml

Also runnable without the CLI registry: ``python -m aqua_model.commands.validate_cmd ...``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from ._common import check_input_file, check_output_file, integer, real, set_run

#: Devices the suite runs on.
DEVICES = ("cpu", "cuda")
#: Most cases one held-out draw may hold. The held-out runs so far measured 111 to 402 cases, each
#: a few GPU seconds; 10,000 is 25x the largest, hours of GPU time, and about 10 s of sampling
#: (1 ms a case). Beyond it a typo (an extra digit or three) would run for days.
MAX_SAMPLE_CASES = 10_000
#: A git commit as --model-commit takes it: 7 to 40 lowercase hex digits (an abbreviated or full hash).
_COMMIT = re.compile(r"[0-9a-f]{7,40}")


def _check_commit(flag: str, value: str | None) -> None:
    if value is not None and not _COMMIT.fullmatch(value):
        raise ValueError(f"{flag} must be a git commit hash (7 to 40 hex digits 0-9a-f), got {value!r}")


def _check_deadline(value: float | None) -> None:
    if value is not None and not value > 0:
        raise ValueError(f"--deadline-s must be > 0 seconds, got {value!r}")


def _check_known_plans(rows: list, flag: str, path: str) -> None:
    """Every row's phase/plan must be a plan of the model: an unknown one would be reported and
    validated as if it were a plan."""
    from aqua_model.plans import plan_names

    known = {phase: plan_names(phase) for phase in ("decode", "prefill")}
    unknown = sorted(
        {
            f"{r.get('phase')}/{r.get('plan')}"
            for r in rows
            if r.get("phase") not in known or r.get("plan") not in known[r["phase"]]
        }
    )
    if unknown:
        listed = ", ".join(f"{phase}/{plan}" for phase, plans in known.items() for plan in plans)
        raise ValueError(f"{flag} {path}: rows of unknown plans {', '.join(unknown)}; known: {listed}")


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    """Register ``validate`` with its three sub-subcommands."""
    p = sub.add_parser(name, help="calibrate a device, time the plans' kernels, report predicted vs measured")
    vsub = p.add_subparsers(dest="validate_command", required=True, metavar="STEP")

    c = vsub.add_parser("calibrate", help="micro-benchmarks -> calibrated hardware profile (TOML)")
    c.add_argument("--out", required=True, help="path of the calibrated profile TOML to write")
    c.add_argument("--device", choices=DEVICES, default=None, help="(default: cuda when available, else cpu)")
    c.add_argument(
        "--quick",
        action="store_true",
        help="fewer sizes (seconds; for CI and the CPU mode) (default: the full size set)",
    )
    c.add_argument(
        "--base", default=None, help="datasheet profile to build on (default: from the device name)"
    )
    c.add_argument(
        "--deadline-s",
        type=real,
        default=None,
        help="start no new implementation micro-benchmark after this many seconds (default: no deadline)",
    )
    c.add_argument(
        "--no-streams",
        action="store_true",
        help="skip the implementation micro-benchmarks (graph timing, SDPA, Triton, matvec) (default: run them)",
    )
    set_run(c, run_calibrate)

    sm = vsub.add_parser(
        "sample", help="draw held-out cases from the documented distribution (validation/README.md)"
    )
    sm.add_argument(
        "--seed",
        type=integer,
        required=True,
        help="the seed (chosen after the freeze, by the rule in validation/README.md)",
    )
    sm.add_argument(
        "--n",
        type=integer,
        required=True,
        help=f"fewest cases to draw, 1 to {MAX_SAMPLE_CASES:,} (the held-out runs drew 111 to 402)",
    )
    sm.add_argument("--out", required=True, help="case file (JSONL, a meta line first)")
    sm.add_argument(
        "--model-commit",
        default=None,
        help="the commit the model is frozen at (default: the checkout's HEAD)",
    )
    sm.add_argument(
        "--scale",
        choices=("h200", "cpu"),
        default="h200",
        help="the distribution: the documented H200 one, or its tiny CPU form (CI) (default: %(default)s)",
    )
    sm.add_argument(
        "--role",
        choices=("train", "calibration", "test"),
        default="test",
        help="which of the protocol's three samples this is (validation/README.md) (default: %(default)s)",
    )
    sm.add_argument(
        "--core-only",
        action="store_true",
        help="only the core plans of each shape (default: the core plans and one extra plan drawn in)",
    )
    set_run(sm, run_sample)

    ft = vsub.add_parser(
        "fit", help="fit the kernel-time forms on a training sample into a calibrated profile (issue 21)"
    )
    ft.add_argument("--profile", required=True, help="calibrated base profile (micro-benchmarks: the start)")
    ft.add_argument("--train", nargs="+", required=True, help="measured training rows (JSONL)")
    ft.add_argument("--out", required=True, help="fitted profile (TOML)")
    ft.add_argument(
        "--name",
        default=None,
        help="the fitted profile's identity, stored in the file (default: the base's + '-fitted')",
    )
    ft.add_argument(
        "--audit-out",
        default=None,
        help="the training rows' fitted predictions, JSONL (default: not written)",
    )
    set_run(ft, run_fit)

    iv = vsub.add_parser(
        "intervals", help="freeze 80%% prediction intervals from in-sample results into a calibrated profile"
    )
    iv.add_argument("--profile", required=True, help="the calibrated profile the results were predicted with")
    iv.add_argument("--results", nargs="+", required=True, help="in-sample results JSONL")
    iv.add_argument(
        "--conformal",
        action="store_true",
        help="the results are the protocol's calibration sample: plain split-conformal intervals, not widened "
        "(default: in-sample residuals widened by the calibration spread)",
    )
    iv.add_argument("--out", required=True, help="the profile to write (may be --profile itself)")
    set_run(iv, run_intervals)

    r = vsub.add_parser("run", help="measure the case grid, streaming rows to JSONL (resumes)")
    r.add_argument("--profile", required=True, help="calibrated profile TOML (from 'validate calibrate')")
    r.add_argument(
        "--datasheet", default=None, help="datasheet profile (default: the calibrated profile's base)"
    )
    r.add_argument(
        "--out", required=True, help="results JSONL (appended; case ids already there are skipped)"
    )
    r.add_argument("--device", choices=DEVICES, default=None, help="(default: cuda when available, else cpu)")
    r.add_argument(
        "--max-cases", type=integer, default=None, help="attempt at most this many new cases (default: all)"
    )
    r.add_argument(
        "--plans",
        nargs="+",
        default=None,
        metavar="PLAN",
        help="run only the cases of these plans, e.g. aqua-token-major (default: every plan)",
    )
    r.add_argument(
        "--phase",
        choices=("decode", "prefill"),
        default=None,
        help="run only the cases of this phase (default: both)",
    )
    r.add_argument(
        "--cpu-small", action="store_true", help="the tiny CPU grid (default: on with --device cpu)"
    )
    r.add_argument(
        "--grid",
        choices=("gpu", "reduced", "cpu"),
        default=None,
        help="the case grid: the full H200 grid, the reduced in-sample grid of a held-out call, or the CPU grid "
        "(default: gpu, or cpu with --device cpu / --cpu-small)",
    )
    r.add_argument(
        "--cases",
        default=None,
        help="held-out case file from 'validate sample' instead of a grid; refused if the model changed since "
        "(default: a grid)",
    )
    r.add_argument(
        "--model-commit",
        default=None,
        help="the commit the model is frozen at, recorded in every row (default: the case file's, else none)",
    )
    r.add_argument(
        "--deadline-s",
        type=real,
        default=None,
        help="start no new case after this many seconds (default: no deadline)",
    )
    r.add_argument(
        "--warmup-ms",
        type=real,
        default=None,
        help="timer warm-up per call site in ms (default: the timer's)",
    )
    r.add_argument(
        "--rep-ms",
        type=real,
        default=None,
        help="timer repeat budget per call site in ms (default: the timer's)",
    )
    r.add_argument(
        "--eager",
        action="store_true",
        help="time eager launches only (default on CUDA: CUDA-graph replays, plus the eager total)",
    )
    r.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar)")
    set_run(r, run_cases_cmd)

    s = vsub.add_parser("report", help="per-case and per-plan errors, speedup-ratio errors, targets")
    s.add_argument(
        "results",
        nargs="+",
        help="results JSONL from 'validate run'; with several files, a measured ('ok') row of a later "
        "file replaces the row of the same case in an earlier one (a rerun of a subset)",
    )
    s.add_argument("--markdown", default=None, help="also write a Markdown summary here (default: none)")
    s.add_argument("--no-cases", action="store_true", help="leave out the per-case lines (default: listed)")
    s.add_argument(
        "--repredict",
        default=None,
        metavar="PROFILE",
        help="recompute every prediction with the current model, using this calibrated profile "
        "(and its base datasheet profile); the measurements are kept as they are (default: as recorded)",
    )
    s.add_argument(
        "--out",
        default=None,
        help="with --repredict: also write the re-predicted rows to this JSONL (default: none)",
    )
    s.add_argument(
        "--heldout",
        nargs="+",
        default=None,
        metavar="HELDOUT",
        help="held-out results: print them beside the in-sample results, with the issue's targets and the "
        "interval coverage (default: none)",
    )
    s.add_argument(
        "--heldout-markdown", default=None, help="with --heldout: write that comparison here (default: none)"
    )
    s.add_argument(
        "--status-out",
        default=None,
        help="with --heldout: write the plan verdicts (unvalidated where the held-out p90 > 25%%) here (default: none)",
    )
    s.add_argument(
        "--lenient",
        action="store_true",
        help="skip lines that break the row schema, counting them in the report (default: any bad line "
        "other than a torn last one is an error)",
    )
    set_run(s, run_report)


def run_calibrate(args: argparse.Namespace) -> int:
    """Run the micro-benchmarks and write the profile."""
    from aqua_model.validate.microbench import calibrate_profile

    check_output_file("--out", args.out)
    _check_deadline(args.deadline_s)
    if args.base is not None:
        from aqua_model.hardware import load

        try:
            load(args.base)  # an unknown base is an error before the benchmarks run, not after
        except ValueError as exc:
            raise ValueError(f"--base {args.base!r}: {exc}") from None
    device = args.device or _default_device()
    _check_device(device)
    prof = calibrate_profile(
        out_path=args.out,
        device=device,
        quick=args.quick,
        base=args.base,
        streams=not args.no_streams,
        deadline_s=args.deadline_s,
    )
    print(f"wrote {args.out} (mode {prof.mode})")
    print(prof.describe())
    return 0


def run_cases_cmd(args: argparse.Namespace) -> int:
    """Measure the case grid against both prediction modes."""
    from aqua_model.hardware import load
    from aqua_model.validate.runner import Measurer, run_cases
    from aqua_model.validate.timing import DEFAULT_REP_MS, DEFAULT_WARMUP_MS

    check_output_file("--out", args.out)
    _check_deadline(args.deadline_s)
    _check_commit("--model-commit", args.model_commit)
    device = args.device or _default_device()
    _check_device(device)
    calibrated = load(args.profile)
    if calibrated.calibration is None:
        raise ValueError(
            f"--profile must be a calibrated profile (mode = 'calibrated'), got {args.profile!r} in mode {calibrated.mode!r}"
        )
    base = args.datasheet or _calibration_base(args.profile)
    if not base:
        raise ValueError("the calibrated profile names no base datasheet profile; pass --datasheet")
    datasheet = load(base)
    if args.max_cases is not None and args.max_cases < 1:
        raise ValueError(f"--max-cases must be >= 1, got {args.max_cases}")
    row_extra: dict = {"case_source": "grid"}
    if args.cases:
        from aqua_model.validate.sampling import check_frozen, read_cases

        check_input_file("--cases", args.cases)
        meta, cases = read_cases(args.cases)
        check_frozen(meta)
        row_extra = {
            "case_source": "heldout",
            "heldout_seed": meta["seed"],
            "model_commit": meta.get("model_commit"),
            "model_sha256": meta.get("model_sha256"),
        }
    else:
        from aqua_model.validate.cases import grid

        name = args.grid or ("cpu" if (args.cpu_small or device == "cpu") else "gpu")
        cases = grid(name)
        row_extra["grid"] = name
    if args.model_commit:
        row_extra["model_commit"] = args.model_commit
    if args.plans:
        known = sorted({c.plan for c in cases})
        unknown = sorted(set(args.plans) - set(known))
        if unknown:
            raise ValueError(f"--plans {unknown} are not plans of the grid; known: {known}")
        cases = [c for c in cases if c.plan in args.plans]
    if args.phase:
        cases = [c for c in cases if c.phase == args.phase]
    measurer = Measurer(
        device,
        warmup_ms=args.warmup_ms if args.warmup_ms is not None else DEFAULT_WARMUP_MS,
        rep_ms=args.rep_ms if args.rep_ms is not None else DEFAULT_REP_MS,
        graph=not args.eager,
    )
    counts = run_cases(
        cases,
        out_path=args.out,
        datasheet=datasheet,
        calibrated=calibrated,
        device=device,
        measure=measurer,
        deadline_s=args.deadline_s,
        max_cases=args.max_cases,
        progress=not args.no_progress,
        row_extra=row_extra,
    )
    measurer.release()
    print("cases: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def run_report(args: argparse.Namespace) -> int:
    """Print the report and write the Markdown summary."""
    from aqua_model.validate.report import render_text, report_file
    from aqua_model.validate.rows import BadRowsError, read_results
    from aqua_model.validate.runner import current_names, merge_runs

    for path in args.results:
        check_input_file("results", path)
    if args.markdown:
        check_output_file("--markdown", args.markdown)
    for flag, path in (("--heldout-markdown", args.heldout_markdown), ("--status-out", args.status_out)):
        if path is not None:  # every output checked before the report is computed and printed
            check_output_file(flag, path)
    if args.out:
        if not args.repredict:
            raise ValueError("--out is only used with --repredict")
        check_output_file("--out", args.out)
    runs, skipped = [], []
    for path in args.results:
        try:
            result = read_results(path, lenient=args.lenient)
        except BadRowsError as exc:
            for line in exc.result.lines():
                print(f"aqua-model validate: {line}", file=sys.stderr)
            raise ValueError(
                f"{len(exc.result.rejected)} bad line(s) in {path} (listed above); fix them or pass --lenient "
                "to skip them"
            ) from None
        for line in result.lines():
            print(
                f"aqua-model validate: {line}" + (" (skipped: --lenient)" if "torn" not in line else ""),
                file=sys.stderr,
            )
        skipped += [(path, r.line) for r in result.rejected]
        runs.append([current_names(row) for row in result.rows])
        _check_known_plans(runs[-1], "results", path)
    rows = merge_runs(runs)
    if not rows:
        raise ValueError(f"results {' '.join(args.results)} hold no result rows: nothing to report")
    if args.repredict:
        rows = _repredicted(rows, args.repredict, args.out)
    rep = report_file(args.results[0], markdown=args.markdown, rows=rows)
    print(render_text(rep, per_case=not args.no_cases))
    if args.heldout:
        _heldout_report(args, rep)
    elif args.heldout_markdown or args.status_out:
        raise ValueError("--heldout-markdown and --status-out need --heldout")
    if skipped:
        note = (
            f"rejected lines skipped (--lenient): {len(skipped)} ("
            + ", ".join(f"{p}:{n}" for p, n in skipped[:10])
            + (", ..." if len(skipped) > 10 else "")
            + ")"
        )
        print(note)
        if args.markdown:
            with open(args.markdown, "a") as fh:
                fh.write(f"\n{note}\n")
    if args.markdown:
        print(f"wrote {args.markdown}")
    return 0


def _heldout_report(args: argparse.Namespace, insample) -> None:
    """Held-out rows beside the in-sample report; the issue's targets; the plan verdicts."""
    from aqua_model.validate.report import (
        build_report,
        heldout_markdown,
        heldout_targets,
        status_entries,
        write_status,
    )
    from aqua_model.validate.runner import merge_runs, read_rows

    for path in args.heldout:
        check_input_file("--heldout", path)
    runs = [read_rows(p, lenient=args.lenient) for p in args.heldout]
    for path, run_rows in zip(args.heldout, runs):
        _check_known_plans(run_rows, "--heldout", path)
    rows = merge_runs(runs)
    if not rows:
        raise ValueError(
            f"--heldout {' '.join(args.heldout)} holds no result rows: a target with no cases is not met, "
            "so there is nothing to report"
        )
    if args.repredict:
        rows = _repredicted(rows, args.repredict, None)
    held = build_report(rows)
    seeds = sorted({r["heldout_seed"] for r in rows if r.get("heldout_seed") is not None})
    commits = sorted({r["model_commit"] for r in rows if r.get("model_commit")})
    if len(seeds) > 1 or len(commits) > 1:
        raise ValueError(
            f"--heldout mixes seeds {seeds} or frozen commits {commits}: report one held-out run at a time"
        )
    meta = {
        "seed": seeds[0] if seeds else None,
        "model_commit": commits[0] if commits else None,
        "model_sha256": next((r.get("model_sha256") for r in rows if r.get("model_sha256")), None),
        "cases": len(rows),
        "shapes": len({r.get("case_id", "").split("/", 2)[-1] for r in rows}),
    }
    text = heldout_markdown(insample, held, meta=meta)
    print("\n" + text)
    if args.heldout_markdown:
        check_output_file("--heldout-markdown", args.heldout_markdown)
        with open(args.heldout_markdown, "w") as fh:
            fh.write(text)
        print(f"wrote {args.heldout_markdown}")
    if args.status_out:
        check_output_file("--status-out", args.status_out)
        entries = status_entries(held, seed=meta["seed"], commit=meta["model_commit"])
        if not entries:
            raise ValueError(
                f"--status-out {args.status_out!r}: the held-out rows measured no plan, so there is no verdict to write"
            )
        write_status(entries, args.status_out)
        print(f"wrote {args.status_out}")
    print(targets_line(heldout_targets(held)))


def targets_line(targets: list[dict]) -> str:
    """The last line of a held-out report: "all met" only when every target was evaluated and met;
    a target with no cases is "not evaluated", which is not met."""
    missed = [t["target"] for t in targets if t["met"] is False]
    unjudged = [t["target"] for t in targets if t["met"] is None]
    if not missed and not unjudged:
        return "held-out targets: all met"
    parts = []
    if missed:
        parts.append(f"{len(missed)} MISSED: " + "; ".join(missed))
    if unjudged:
        parts.append(f"{len(unjudged)} not evaluated (no cases, so not met): " + "; ".join(unjudged))
    return "held-out targets: " + " | ".join(parts)


def run_sample(args: argparse.Namespace) -> int:
    """Draw held-out cases and write the case file."""
    from aqua_model.validate.sampling import write_cases

    check_output_file("--out", args.out)
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    if not 1 <= args.n <= MAX_SAMPLE_CASES:
        raise ValueError(
            f"--n must be 1 to {MAX_SAMPLE_CASES} (cases of one held-out run; the runs so far drew 111 to 402), "
            f"got {args.n}"
        )
    _check_commit("--model-commit", args.model_commit)
    meta = write_cases(
        seed=args.seed,
        n=args.n,
        out_path=args.out,
        model_commit=args.model_commit,
        scale=args.scale,
        role=args.role,
        core_only=args.core_only,
    )
    print(
        f"wrote {args.out}: {meta['cases']} cases from {meta['shapes']} shapes (seed {meta['seed']}; model "
        f"{meta['model_commit']}, fingerprint {meta['model_sha256'][:12]}{', tree dirty' if meta['model_dirty'] else ''}); "
        f"redraws {meta['redraws']}"
    )
    return 0


def run_fit(args: argparse.Namespace) -> int:
    """Fit the kernel-time forms on training rows (:mod:`aqua_model.validate.fit`)."""
    from aqua_model.validate.fit import write_fitted_profile
    from aqua_model.validate.runner import read_rows

    check_output_file("--out", args.out)
    if args.audit_out is not None:
        check_output_file("--audit-out", args.audit_out)
    check_input_file("--profile", args.profile)
    rows = [r for path in args.train for r in read_rows(path)]
    seeds = sorted({int(r["heldout_seed"]) for r in rows if r.get("heldout_seed") is not None})
    entries = write_fitted_profile(
        profile=args.profile,
        rows=rows,
        out=args.out,
        seeds=tuple(seeds),
        name=args.name,
        audit_out=args.audit_out,
    )
    for e in entries:
        q = e["fit"]["residual_quantiles"]
        print(
            f"{e['key']:<18} n={e['fit']['n']:<4} residual q10/q50/q90 {q['q10']:+.3f} {q['q50']:+.3f} {q['q90']:+.3f}"
        )
    print(f"wrote {args.out} ({len(entries)} fitted forms)")
    return 0


def run_intervals(args: argparse.Namespace) -> int:
    """Freeze the intervals of in-sample results into the profile."""
    from aqua_model.validate.intervals import freeze_intervals

    check_input_file("--profile", args.profile)
    for path in args.results:
        check_input_file("--results", path)
    check_output_file("--out", args.out)
    entries = freeze_intervals(
        profile=args.profile, results=args.results, out=args.out, conformal=args.conformal
    )
    for e in entries:
        sp = (
            f", speedup [{e['speedup'][0]:+.3f}, {e['speedup'][1]:+.3f}] (n {e['n_speedup']})"
            if "speedup" in e
            else ""
        )
        print(
            f"{e['phase']}/{e['plan']}: ln(measured/predicted) in [{e['time'][0]:+.3f}, {e['time'][1]:+.3f}] (n {e['n_time']}){sp}"
        )
    print(f"wrote {args.out} ({len(entries)} plan intervals)")
    return 0


def _repredicted(rows: list, profile: str, out: str | None) -> list:
    """``rows`` with predictions recomputed on ``profile`` and its datasheet base."""
    import json

    from aqua_model.hardware import load
    from aqua_model.validate.runner import repredict_rows

    calibrated = load(profile)
    base = _calibration_base(profile)
    if calibrated.calibration is None or not base:
        raise ValueError(f"--repredict needs a calibrated profile with a [calibration] base, got {profile!r}")
    rows = repredict_rows(rows, datasheet=load(base), calibrated=calibrated)
    if out:
        with open(out, "w") as fh:
            fh.writelines(json.dumps(r, default=float) + "\n" for r in rows)
    return rows


def _calibration_base(path: str) -> str | None:
    """The ``base`` datasheet key a calibrated profile was built on ([calibration] base)."""
    from aqua_model.hardware import load

    calibration = load(path).calibration or {}
    base = calibration.get("base")
    return base if isinstance(base, str) and base else None


def _check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point (``python -m aqua_model.commands.validate_cmd``): the CLI's
    ``validate`` subcommand, with its one-line errors."""
    from ._common import Parser, run_command

    parser = Parser(prog="aqua-model")
    add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), "validate")
    return run_command(parser, ["validate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
