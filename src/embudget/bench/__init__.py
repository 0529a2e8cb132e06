"""Experiments over many runs: the resumable grid, reports, statistics and the demo."""
