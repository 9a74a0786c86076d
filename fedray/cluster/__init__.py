"""Running on Ray clusters: resource checks before the first round."""
