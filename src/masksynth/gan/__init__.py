"""The synthetic-face generator: the paper's DCGAN and its small-data improvements."""
