"""`atlasrec demo`: the platform end to end on the MovieLens tenant mix (not in the FAB).

`run` drives it; `federation`, `serving` and `audit` are its steps.
"""
