"""Shared helpers of the benchmark scripts: timing, targets and the common output shape.

Every benchmark prints one JSON object::

    {
      "name": "refine_decode",
      "inputs": {...sizes, counts, threads, device...},
      "figures": {...measured values...},
      "targets": [{"figure", "value", "target", "unit", "basis", "pass"}, ...],
      "reference": {...SPEC §11 figures of the official code, where there are some...},
      "skipped": {"case": "reason", ...},
      "notes": "...",
      "machine": {...python/torch versions, cores, load average at start and end...}
    }

Timing reports wall time next to process CPU time (``time.process_time``: all threads of
the process). On a shared machine wall time also counts time spent waiting for a core;
CPU time does not, and for a process that never waits on anything else it bounds the wall
time on idle cores, so targets are judged on it (each target says which figure it reads).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

_START_LOAD = os.getloadavg()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded."""
    return [round(value, 2) for value in os.getloadavg()]


def machine(device: str | None = None) -> dict[str, Any]:
    """Versions, cores, thread settings and load average (at import and now)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _processor(),
        "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "load_average_start": [round(value, 2) for value in _START_LOAD],
        "load_average_end": load_average(),
    }
    for module in ("numpy", "torch", "cv2"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "?")
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info["torch_threads"] = torch.get_num_threads()
        info["cuda_available"] = bool(torch.cuda.is_available())
        if torch.cuda.is_available():
            info["cuda_device"] = torch.cuda.get_device_name()
    if device is not None:
        info["device"] = device
    return info


def _processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(
    function: Callable[[], object], runs: int, *, warmup: int = 1, sync: Callable[[], None] = None
) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds of each of ``runs`` calls, after ``warmup`` calls."""
    for _ in range(warmup):
        function()
    if sync is not None:
        sync()
    samples = []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        if sync is not None:
            sync()
        samples.append((time.perf_counter() - wall, time.process_time() - cpu))
    return samples


def summary(samples: Iterable[tuple[float, float]], per: int = 1, digits: int = 3) -> dict:
    """Milliseconds per item (``per`` items per sample): wall median/min/max, CPU median."""
    samples = list(samples)
    wall = [1000.0 * value / per for value, _ in samples]
    cpu = [1000.0 * value / per for _, value in samples]
    return {
        "median_ms": round(statistics.median(wall), digits),
        "min_ms": round(min(wall), digits),
        "max_ms": round(max(wall), digits),
        "median_cpu_ms": round(statistics.median(cpu), digits),
    }


def check(
    figure: str,
    value: float | None,
    target: float,
    *,
    unit: str = "ms/image",
    basis: str = "median process CPU time",
    below: bool = True,
) -> dict[str, Any]:
    """One target: passes when ``value`` is below (or, ``below=False``, above) ``target``."""
    passed = None if value is None else (value < target if below else value > target)
    return {
        "figure": figure,
        "value": value,
        "target": f"{'<' if below else '>'} {target} {unit}",
        "basis": basis,
        "pass": passed,
    }


def result(
    name: str,
    inputs: dict[str, Any],
    figures: dict[str, Any],
    *,
    targets: Iterable[dict[str, Any]] = (),
    reference: dict[str, Any] | None = None,
    skipped: dict[str, str] | None = None,
    notes: str | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """The common output object of a benchmark."""
    output: dict[str, Any] = {"name": name, "inputs": inputs, "figures": figures}
    output["targets"] = list(targets)
    if reference:
        output["reference"] = reference
    if skipped:
        output["skipped"] = skipped
    if notes:
        output["notes"] = notes
    output["machine"] = machine(device)
    return output


def emit(output: dict[str, Any]) -> None:
    """Print the object (one JSON document) and its pass/fail lines on stderr."""
    print(json.dumps(output, indent=2))
    for target in output.get("targets", []):
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[target["pass"]]
        print(
            f"[{output['name']}] {target['figure']} = {target['value']} "
            f"(target {target['target']}, {target['basis']}): {verdict}",
            file=sys.stderr,
        )
    for case, reason in (output.get("skipped") or {}).items():
        print(f"[{output['name']}] skipped {case}: {reason}", file=sys.stderr)
