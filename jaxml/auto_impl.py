"""What `impl="auto"` means on each backend: only what a committed benchmark measured.

`linear_recurrence(impl="auto")` and `dot_product_attention(impl="auto")` look up
the tables below. A backend is listed only when a committed benchmark JSON (written
by `benchmarks/scan.py` / `benchmarks/attention.py` on that hardware) shows the
named implementation correct and fastest, as `fastest_correct` reads it; every
other backend gets the safe XLA path (`SCAN_SAFE_IMPL`, `ATTENTION_SAFE_IMPL`).
tests/test_linear_recurrence.py and tests/test_pallas_attention.py check each
entry against its JSON file, so an entry cannot outlive or precede its measurement.

After an accelerator run (`benchmarks/accelerator_check.sh`), commit its
`scan_<backend>.json` / `attention_<backend>.json` and set the entries to what
`fastest_correct` returns for them.
"""

from __future__ import annotations

import math

# From benchmarks/scan.py (B 8, P 256, complex64, L 1k-16k, forward + backward; every
# implementation checked against a NumPy loop before it is timed). Each entry's file:
SCAN_AUTO_SOURCES: dict[str, str] = {"cpu": "benchmarks/results/scan_cpu.json"}
SCAN_AUTO_IMPL: dict[str, str] = {"cpu": "sequential"}
SCAN_SAFE_IMPL = "associative"  # lax.associative_scan, the official S5 algorithm

# No attention benchmark has been committed for any backend yet.
ATTENTION_AUTO_IMPL: dict[str, str] = {}
ATTENTION_AUTO_SOURCES: dict[str, str] = {}
ATTENTION_SAFE_IMPL = "xla"


def fastest_correct(report: dict, case: str, mode: str = "fwd_bwd") -> str | None:
    """The implementation a benchmark report justifies for `impl="auto"`, or None.

    Reads the `results` rows of `case` and `mode` (each with "impl", "length",
    "median_s", "max_rel_error") and `config.max_rel_error_allowed`. An
    implementation qualifies only when it was compiled (not run in the Pallas
    interpreter) and has a recorded error within the allowance at every length
    measured for that case; among those, the smallest geometric mean of the
    medians over the lengths wins.
    """
    config = report.get("config", {})
    allowed = config.get("max_rel_error_allowed")
    interpreted = bool(config.get("pallas_interpreted"))
    rows = [r for r in report.get("results", []) if r["case"] == case and r["mode"] == mode]
    lengths = {r["length"] for r in rows}
    scores = {}
    for impl in sorted({r["impl"] for r in rows}):
        mine = [r for r in rows if r["impl"] == impl]
        if interpreted and impl.startswith("pallas"):
            continue
        if {r["length"] for r in mine} != lengths:
            continue
        errors = [_worst(r.get("max_rel_error")) for r in mine]
        if allowed is None or any(e is None or not e <= allowed for e in errors):
            continue  # unchecked, NaN or wrong: never the default
        scores[impl] = sum(math.log(r["median_s"]) for r in mine) / len(mine)
    return min(scores, key=scores.get) if scores else None


def _worst(error) -> float | None:
    """A row's error: a number, or a dict of numbers (h, grad_a, ...) -> the largest."""
    if error is None:
        return None
    if isinstance(error, dict):
        values = list(error.values())
        if not values or any(v is None for v in values):
            return None
        return max(values, key=lambda v: (v != v, v))  # NaN counts as the worst
    return error
