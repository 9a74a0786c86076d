"""A federated model's life beyond its training rounds: the update ledger, unlearning,
contribution and payout, who owns the model (watermarks), and data that changes
(continual learning)."""
