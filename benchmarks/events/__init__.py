"""The interaction-events benchmark: `scripts/bench events [--quick]`.

Measures the path of `POST /v1/events` after the change to a durable event log (NATS
JetStream, or the embedded SQLite log) against the old path (commit 94d27a7: Redis, 202,
then the region database in the background), each variant running its own code in its own
processes (`atlasrec serve`, `atlasrec events consume`, `atlasrec ingest`):

1. events acknowledged per serving process (batches of 50 and of 1; fixed rate, saturation);
2. the offline consumer draining a pre-filled log into Parquet;
3. CSV ingest of 1M and 2M interactions;
4. freshness: from an event's 202 to a recommendation reflecting it, and to the offline store;
5. the region database locked for 40 s under load: acknowledged vs stored;
6. peak RSS of every process measured.

Results in docs/benchmarks-events.json and docs/benchmarks.md.
"""
