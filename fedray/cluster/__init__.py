"""Running on Ray clusters: job submission, placement, and resource checks before the first round."""
