"""A region's durable event log: POST /v1/events appends here before it acknowledges.

One log per region (NATS JetStream in production: one stream per region, a subject per
tenant; embedded: `LocalEventLog`, an SQLite file in WAL mode), read by durable,
at-least-once consumers that apply each event idempotently.
"""
