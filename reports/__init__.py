"""Reports: pure functions from stored results to markdown tables and plots."""
