"""The serving benchmark's plain-text summary of its median figures."""

from __future__ import annotations

from typing import Any

from benchmarks.serving.config import TARGET_P99_MS, TARGET_RATE


def short(run: dict[str, Any]) -> str:
    """One run in a line: latency percentiles, rate, errors, server CPU, machine load."""
    return (
        f"p50 {run['p50_ms']} p95 {run['p95_ms']} p99 {run['p99_ms']} ms, "
        f"{run['achieved_rps']} req/s, {run['errors']} errors, "
        f"server CPU {run.get('server_cpu_ms_per_request')} ms/req, "
        f"load {run.get('loadavg_1m_before')}"
    )


def report(results: dict[str, Any]) -> str:
    """A plain-text summary of the median figures."""
    lines = []
    median = results["median"]
    for name, runs in median.items():
        for label, r in runs.items():
            line = f"{name:<12} {label:<10} {short(r)}"
            if "stages_ms" in r:
                line += "  stages p50: " + ", ".join(
                    f"{s} {v['p50']}" for s, v in r["stages_ms"].items()
                )
            lines.append(line)
    for name, w in results.get("wrk", {}).items():
        m = w["median"]
        lines.append(
            f"{name:<12} wrk x{m['connections']:<5} {m['requests_per_s']} req/s, "
            f"p50 {m.get('p50_ms')} p99 {m.get('p99_ms')} ms, non-2xx {m['non_2xx']}"
        )
    for name, spy in results.get("server_profile", {}).items():
        if "share" in spy:
            lines.append(
                f"server (py-spy, GIL samples) {name}: "
                + ", ".join(f"{label} {share:.0%}" for label, share in spy["share"].items())
            )
    for name, c in results.get("intents", {}).items():
        lines.append(
            f"intents {name}: total p50 next {c['ms']['next']['total']['p50']} ms, profile "
            f"{c['ms']['profile']['total']['p50']} ms "
            f"({c['total_p50_ratio_profile_to_next']}x); p99 {c['ms']['next']['total']['p99']} / "
            f"{c['ms']['profile']['total']['p99']} ms"
        )
    for name, p in results.get("profile", {}).items():
        lines.append(f"profile {name}: {p['profiled_ms_per_request']} ms/request under cProfile")
        for stage, entries in p["stages"].items():
            for e in entries:
                lines.append(f"  {stage:<9} {e['cum_ms_per_request']:>8} ms  {e['function']}")
    for name, runs in median.items():
        key = f"open_{TARGET_RATE:g}"
        if name != "healthz" and key in runs:
            r = runs[key]
            met = (
                r["p99_ms"] is not None
                and r["p99_ms"] <= TARGET_P99_MS
                and r["achieved_rps"] >= 0.98 * TARGET_RATE
                and r["errors"] == 0
            )
            lines.append(
                f"target p99 <= {TARGET_P99_MS:g} ms at {TARGET_RATE:g} req/s, {name}: "
                f"{'met' if met else 'NOT met'} (p99 {r['p99_ms']} ms, {r['achieved_rps']} req/s)"
            )
    return "\n".join(lines)
