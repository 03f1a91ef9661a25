"""Launch-count invariant: each implementation launches the CUDA kernels its plan says, in order.

For every plan that declares an implementation, the validation workload built from that
declaration (:func:`aqua_model.validate.workloads.build`) is called eagerly (no CUDA graph)
after a warm-up, under ``torch.profiler``; the CUDA kernels it launched must be as many as the
plan's kernels' launches, and where a kernel names the CUDA kernels it stands for
(``Kernel.launch_names``), each launch must match its pattern, in order. Memory copies and sets
are not kernel launches and are listed but not counted. Every recorded kernel is printed, so
the log of a failing run says what the implementation really launched.
"""

from __future__ import annotations

import re

import pytest

from aqua_model.plans import build_plan, plan_names

torch = pytest.importorskip("torch")

#: The decode and prefill shapes the implementations are run at (GQA g = 4, so the group sum
#: of the torch selection is launched; small enough for any GPU).
DECODE_SHAPE = dict(context=4096, batch=4, heads_q=32, heads_kv=8, d=128, k=32)
PREFILL_SHAPE = dict(context=0, prompt=256, batch=1, heads_q=32, heads_kv=8, d=128, k=32)
WARMUP_CALLS = 3
#: Device activities that are not kernel launches.
NOT_LAUNCHES = ("Memcpy", "Memset")


def implemented() -> list[tuple[str, str]]:
    return [
        (phase, name)
        for phase in ("decode", "prefill")
        for name in plan_names(phase)
        if not build_plan(name, phase=phase).model_only
    ]


@pytest.mark.parametrize("phase,name", implemented())
def test_declared_implementation_resolves(phase: str, name: str) -> None:
    plan = build_plan(name, phase=phase)
    assert callable(plan.implementation.resolve())
    assert plan.key_layout, f"{name} reads no declared key layout"


def _device_kernels(prof) -> list[str]:
    """Names of the CUDA activities the profiler recorded, in start order."""
    from torch.autograd import DeviceType

    events = []
    for evt in prof.events():
        if getattr(evt, "device_type", None) == DeviceType.CUDA:
            events.append((evt.time_range.start, evt.name))
    if not events:  # older profilers keep device activities only in the raw kineto results
        for evt in prof.profiler.kineto_results.events():
            if evt.device_type() == DeviceType.CUDA:
                events.append((evt.start_ns() / 1e3, evt.name()))
    return [name for _, name in sorted(events)]


def _case(phase: str, name: str):
    from aqua_model.validate.cases import Case

    shape = DECODE_SHAPE if phase == "decode" else PREFILL_SHAPE
    k = shape["d"] if name.startswith("dense") else shape["k"]
    return Case(phase=phase, plan=name, **{**shape, "k": k})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("phase,name", implemented())
def test_implementation_launches_the_plans_kernels(phase: str, name: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    from aqua_model.validate import workloads as wl

    case = _case(phase, name)
    plan = build_plan(name, phase=phase, selection=case.selection)
    inp = wl.make_inputs(case, device=torch.device("cuda"), seed=1, layouts=wl.layouts_for(case))
    work = wl.build(case, inp)
    for _ in range(WARMUP_CALLS):
        work.total()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        work.total()
        torch.cuda.synchronize()
    recorded = _device_kernels(prof)
    launches = [n for n in recorded if not n.startswith(NOT_LAUNCHES)]
    expected = [
        f"{kern.name} x{kern.launches}" + (f" {list(kern.launch_names)}" if kern.launch_names else "")
        for kern in plan.kernels
    ]
    print(f"\n{phase}/{name} ({plan.implementation.label()}): plan {plan.launches} launches {expected}")
    print(f"  recorded {len(launches)} kernel launches:")
    for i, kname in enumerate(recorded):
        print(f"    {i:2d} {kname[:160]}")
    assert len(launches) == plan.launches, (
        f"{phase}/{name}: the plan counts {plan.launches} launches, the implementation launched {len(launches)}"
    )
    patterns = plan.launch_names()
    if patterns is not None:
        for i, (pattern, kname) in enumerate(zip(patterns, launches)):
            assert re.search(pattern, kname), (
                f"{phase}/{name}: launch {i} is {kname!r}, the plan says {pattern!r}"
            )
