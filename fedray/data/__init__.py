"""Datasets, partitioning among clients, and the Arrow tables that carry them."""

from fedray.data import images as _images  # noqa: F401  (registers 'mnist5k' and 'idx')
from fedray.data import shakespeare as _shakespeare  # noqa: F401  (registers 'shakespeare')
from fedray.data import synthetic as _synthetic  # noqa: F401  (registers 'synthetic')
from fedray.data.datasets import DATASETS as _DATASETS
from fedray.data.federated import DataInfo, DataPlan, FederatedDataset, build_federated_dataset, plan_federated_dataset

__all__ = ["DataInfo", "DataPlan", "FederatedDataset", "build_federated_dataset", "plan_federated_dataset"]

_DATASETS.register_lazy("reasoning_gym", "fedray.data.reasoning:reasoning_gym")
