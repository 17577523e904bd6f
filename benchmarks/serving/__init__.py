"""Serving benchmark: latency and throughput of the regional serving app over HTTP.

    scripts/bench serving [--quick]
    python -m benchmarks.serving [--quick] [--workers N] [--out FILE]

Sets up, in a temporary ATLASREC_HOME, the largest MovieLens tenant of the demo mix (trained
without DP, few epochs) and a synthetic retail tenant with a 100,000-item catalog, starts the
real server (`atlasrec serve`, one worker) against the real Redis (db 11, flushed first), and
measures, side by side in one run: open-loop constant-rate load, closed-loop maximum
throughput, and the same load on `GET /healthz` (the framework floor). Then the serving path
is profiled in-process with cProfile.

The synthetic tenant's item embeddings are NOT computed by MiniLM: deterministic pseudo-random
unit vectors (clustered by category) are written into `item_embeddings` with the right
`content_sha`, so the server treats them as cached. The benchmark measures serving, not
embedding. That tenant is not trained: it is served on the content-embedding path
(`model_version` "content-embeddings", default ranker), the path of every new tenant.

Modules: `config` (constants), `fixtures` (tenants, request bodies), `server` (the server
process), `load` (load generators, their summaries), `profile` (in-process and py-spy
profiles), `report` (the text summary), `__main__` (options and the run).
"""
