"""Continual federated learning: a data schedule of tasks, methods against forgetting, per-task metrics.

Importing the package registers the schedules (`data.schedule.name`), the client
methods `ewc` and `replay` (`clients.objective`) and the server-side `task_anchor`
(`server.transforms`).
"""

from fedray.lifecycle.continual import methods as _methods  # noqa: F401  (registers ewc, replay, task_anchor)
from fedray.lifecycle.continual.schedule import SCHEDULES, Schedule, build_schedule, schedule_problems

__all__ = ["SCHEDULES", "Schedule", "build_schedule", "schedule_problems"]
