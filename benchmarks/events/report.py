"""The events benchmark's summary: tables of medians and ratios, and the capacity arithmetic."""

from __future__ import annotations

import math
from typing import Any

from benchmarks.events.config import (
    PEAK_FACTOR,
    PRODUCT_EVENTS_PER_DAY,
    REGION_SHARES,
    TARGET_CONSUMER_EVENTS_PER_S,
    TARGET_EVENTS_PER_S,
    TARGET_FRESHNESS_S,
    TARGET_INGEST_ROWS_PER_S,
    TARGET_P99_MS,
)
from benchmarks.stats import ratio


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def capacity(results: dict[str, Any]) -> dict[str, Any]:
    """From the measured per-process rates to processes and cores per region at the peak."""
    average = PRODUCT_EVENTS_PER_DAY / 86_400
    peak = average * PEAK_FACTOR
    serve = _get(results, "ack", "variants", "new-jetstream", "b50_sat", "median") or {}
    drain = _get(results, "consumer", "new-jetstream", "drain") or {}
    per_server = serve.get("events_per_s")
    server_cores = serve.get("server_cores_used")
    per_consumer = drain.get("events_per_s_excluding_startup")
    consumer_cores = drain["cpu_s"] / drain["seconds"] if drain.get("seconds") else None
    out: dict[str, Any] = {
        "events_per_day": PRODUCT_EVENTS_PER_DAY,
        "average_events_per_s": round(average),
        "peak_factor": PEAK_FACTOR,
        "peak_events_per_s": round(peak),
        "region_shares": REGION_SHARES,
        "per_serving_process_events_per_s": per_server,
        "serving_process_cores": server_cores,
        "per_offline_consumer_events_per_s": per_consumer,
        "consumer_process_cores": None if consumer_cores is None else round(consumer_cores, 2),
        "regions": {},
    }
    if not per_server or not per_consumer:
        return out
    for region, share in REGION_SHARES.items():
        events = peak * share
        servers = math.ceil(events / per_server)
        offline = math.ceil(events / per_consumer)
        online = offline  # assumed: the online consumer no faster than the offline one
        cores = servers * (server_cores or 1.0) + (offline + online) * (consumer_cores or 1.0)
        out["regions"][region] = {
            "peak_events_per_s": round(events),
            "serving_processes": servers,
            "offline_consumer_processes": offline,
            "online_consumer_processes_assumed": online,
            "cores_excluding_nats_redis": math.ceil(cores),
        }
    return out


def _f(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


def _ack_lines(ack: dict[str, Any]) -> list[str]:
    lines = [
        "## Events acknowledged per serving process (medians)",
        "| variant | shape | events/s | p50 ms | p99 ms | errors | server cores | client cores |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = ack["variants"].get("baseline", {})
    for variant, shapes in ack["variants"].items():
        for shape, done in shapes.items():
            m = done["median"]
            vs = ratio(m["events_per_s"] or 0, _get(base, shape, "median", "events_per_s") or 0)
            rate = f"{_f(m['events_per_s'])}" + (
                f" ({vs:.2f}x base)" if vs and variant != "baseline" else ""
            )
            lines.append(
                f"| {variant} | {shape} | {rate} | {_f(m['p50_ms'], 1)} | {_f(m['p99_ms'], 1)} "
                f"| {m['errors']} | {_f(m['server_cores_used'], 2)} | "
                f"{_f(m['client_cores_used'], 2)} |"
            )
    lines.append(f"server peak RSS MB: {ack['server_peak_rss_mb']}")
    lines.append(
        f"target: >= {TARGET_EVENTS_PER_S:,.0f} events/s per process, p99 <= {TARGET_P99_MS} ms"
    )
    return lines


def report(results: dict[str, Any]) -> str:
    """A plain-text summary of the results (the JSON has everything)."""
    lines = [f"events benchmark, {results['date']}, {results['machine']}, quick={results['quick']}"]
    if "ack" in results:
        lines += _ack_lines(results["ack"])
    if "consumer" in results:
        lines.append("## Offline consumer draining a pre-filled log")
        for name, done in results["consumer"].items():
            if not isinstance(done, dict):
                continue
            d = done["drain"]
            lines.append(
                f"{name}: {d['events']:,} events in {d['seconds']} s = "
                f"{_f(d['events_per_s'])} ev/s "
                f"({_f(d['events_per_s_excluding_startup'])} without start-up); peak RSS "
                f"{d['peak_rss_mb']} MB; prefill {_f(done['prefill']['events_per_s'])} ev/s "
                f"(target {TARGET_CONSUMER_EVENTS_PER_S:,.0f})"
            )
    if "ingest" in results:
        lines.append("## CSV ingest (atlasrec ingest --interactions)")
        base = results["ingest"].get("baseline", {})
        for name, sizes in results["ingest"].items():
            if not isinstance(sizes, dict):
                continue
            for size, d in sizes.items():
                vs = ratio(d["rows_per_s"], _get(base, size, "rows_per_s") or 0)
                lines.append(
                    f"{name} {int(size):,} rows: {d['seconds']} s, {_f(d['rows_per_s'])} rows/s "
                    f"({_f(vs, 2)}x baseline), peak RSS {d['peak_rss_mb']} MB "
                    f"(target {TARGET_INGEST_ROWS_PER_S:,.0f} rows/s)"
                )
    if "freshness" in results:
        lines.append(f"## Freshness (target < {TARGET_FRESHNESS_S} s)")
        for name, d in results["freshness"].items():
            if isinstance(d, dict) and "ack_ms" in d:
                lines.append(
                    f"{name}: ack {d['ack_ms']} ms; recommendation {d['recommendation_ms']} ms; "
                    f"offline store {d.get('offline_store_ms', '-')} ms; missed {d['missed']}"
                )
    if "locked_db" in results:
        lines.append("## Region database locked under load")
        for name, d in results["locked_db"].items():
            if isinstance(d, dict):
                lines.append(
                    f"{name}: acknowledged {d['acknowledged']:,} "
                    f"({d['acknowledged_during_lock']:,} during the lock), stored "
                    f"{d['stored']:,}, lost {d['lost']}, duplicates "
                    f"{d['duplicates']}, refused {d['refused']}, p99 during lock "
                    f"{d['latency_during_lock_ms']['p99']} ms"
                )
    cap = results.get("capacity", {})
    if cap.get("regions"):
        lines.append(
            f"## Capacity: {cap['average_events_per_s']:,} events/s average, x{cap['peak_factor']} "
            f"= {cap['peak_events_per_s']:,} events/s peak"
        )
        for region, r in cap["regions"].items():
            lines.append(f"{region}: {r}")
    lines.append(f"total {results.get('total_s')} s")
    return "\n".join(lines)
