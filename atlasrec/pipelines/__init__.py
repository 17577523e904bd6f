"""The operations behind the CLI commands: each command parses, calls one, formats its result.

train, recommend, evaluate, privacy report, ingest, federate, serve, tenants' API keys,
officers, audit read-outs and compliance (lineage, reports).
"""
