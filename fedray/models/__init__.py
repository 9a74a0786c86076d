"""Models: builders by name, the flat parameter layout, and per-task loss and metrics."""
