"""Watermarks that prove who owns a federated model: embedded by the owners while it trains.

Importing the package registers the built-in schemes `feature` and `backdoor`
(`server.watermark.name`).
"""

from fedray.lifecycle.watermark import backdoor as _backdoor  # noqa: F401  (registers 'backdoor')
from fedray.lifecycle.watermark import feature as _feature  # noqa: F401  (registers 'feature')
from fedray.lifecycle.watermark.keys import key_path, read_key
from fedray.lifecycle.watermark.scheme import SCHEMES, Scheme, binomial_tail
from fedray.lifecycle.watermark.term import ensure_keys, watermark_problems, watermark_terms
from fedray.lifecycle.watermark.verify import fine_tune, prune_by_magnitude, quantize_int8, verify

__all__ = ["SCHEMES", "Scheme", "binomial_tail", "ensure_keys", "fine_tune", "key_path", "prune_by_magnitude",
           "quantize_int8", "read_key", "verify", "watermark_problems", "watermark_terms"]
