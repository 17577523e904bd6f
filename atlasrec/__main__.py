"""`python -m atlasrec` runs the CLI."""

from atlasrec.cli import main

main()
