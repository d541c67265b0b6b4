"""The benchmark runner and its command-line interface (`rnnbench`)."""
