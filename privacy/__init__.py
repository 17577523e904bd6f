"""Privacy: DP accounting and budgets, pseudonymisation, HE contexts and keys."""
