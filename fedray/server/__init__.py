"""The server side: the Ray actor, the round, checkpoints and the run directory."""
