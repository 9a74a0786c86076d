"""The life of a federated model after and beyond training rounds: who owns it, and data that changes."""
