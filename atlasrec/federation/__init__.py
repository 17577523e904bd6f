"""Federation plumbing shared by the aggregator and the clients: wire format, backbone store."""
