"""`python -m atlasrec.datasets OUT_DIR`: build the MovieLens tenant mix and print its table."""

from atlasrec.datasets.movielens import main

raise SystemExit(main())
