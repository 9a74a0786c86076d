"""Models: builders by name, the flat parameter layout, and per-task loss and metrics."""

from fedray.models import hf as _hf  # noqa: F401  (registers 'hf_causal_lm' and the 'model' tokenizer)
from fedray.models import cnn as _cnn  # noqa: F401  (registers 'cnn')
from fedray.models import gnn as _gnn  # noqa: F401  (registers 'grb_gnn')
from fedray.models import graph_task as _graph_task  # noqa: F401  (registers 'graph_classification')
