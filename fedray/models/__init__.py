"""Models: builders by name, the flat parameter layout, and per-task loss and metrics."""

from fedray.models import hf as _hf  # noqa: F401  (registers 'hf_causal_lm' and the 'model' tokenizer)
