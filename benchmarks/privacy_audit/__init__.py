"""The empirical privacy audit benchmark: each DP release's lower bound against its claim."""
