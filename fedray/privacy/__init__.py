"""Privacy and security: client-level DP with a real accountant, local DP-SGD, SecAgg+,
and the attacks that measure them."""

from fedray.privacy.build import SECURE_AGGREGATION, build_mechanism, build_secure_params, with_privacy
from fedray.privacy.mechanism import PRIVACY, Mechanism
from fedray.privacy.rules import privacy_problems

__all__ = ["PRIVACY", "SECURE_AGGREGATION", "Mechanism", "build_mechanism", "build_secure_params",
           "privacy_problems", "with_privacy"]
