"""The client side: the Ray actor, the local training loop, per-client state."""
