"""Experiments over many runs: grid sweeps, and reports that compare run directories."""
