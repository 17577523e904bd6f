"""Model benchmark: quality against baselines, DP against non-DP, DP-SGD cost.

    scripts/bench models [--quick | --only-cost | --seed-study | --ranker-study | --ranker-cost
                          | --neighbours-study]
    python -m benchmarks.models [...] [--out FILE]

Everything is measured in one run on this machine, side by side: the baselines and the
models share each split; DP and non-private training time the same architecture.

Modules: `fixtures` (MovieLens data and content), `quality` (model quality studies), `cost`
(training time and memory, DP against non-private), `__main__` (options, the JSON results).
"""
