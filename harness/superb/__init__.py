"""SUPERB scoring: task registry, weighted-sum featurizer, heads, evaluation, SUPERB score.

``TASKS`` maps a task name (``ks``, ``ic``, ``sid``, ``er``, ``pr``, ``asr``) to a builder
``(profile) -> Task``; ``harness ls tasks`` lists it.
"""

from harness.superb.tasks import TASKS, Task, get_task, parse_tasks

__all__ = ["TASKS", "Task", "get_task", "parse_tasks"]
