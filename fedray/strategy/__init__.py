"""Server strategies: how updates are combined (aggregate) and applied (presets)."""
