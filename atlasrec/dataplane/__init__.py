"""A region's data plane: its database, artifact store and the scoped access to both."""
