"""fedray: federated learning with foundation models on Ray.

Heavy dependencies (torch, ray, transformers) are imported lazily by the modules
that need them, so `fedray validate` and config errors stay fast.
"""

__version__ = "0.1.0"
