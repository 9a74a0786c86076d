"""A client's life in a federation: its update ledger, unlearning, contribution and payout."""
