"""The experiment's report: the paper's tables, statistics and figures from `results.json`."""
