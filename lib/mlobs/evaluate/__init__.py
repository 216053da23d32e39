"""Golden-set evaluation: datasets, the Bento server and client, metrics, comparison, the mode."""
