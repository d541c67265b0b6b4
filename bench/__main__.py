"""`python -m bench ...` is `rnnbench ...`."""

from bench.cli import main

main()
