"""The task registry: ``get_task(name, **options)`` builds a task; ``TASKS`` lists them.

Adding a task is one ``register_task`` call next to the function that builds it.
"""

from __future__ import annotations

from collections.abc import Callable

from lrkit.tasks.base import Task, TaskData, classification_metrics

TASKS: dict[str, Callable[..., Task]] = {}
TASK_SUMMARIES: dict[str, str] = {}


def register_task(name: str, summary: str) -> Callable[[Callable[..., Task]], Callable[..., Task]]:
    def decorate(factory: Callable[..., Task]) -> Callable[..., Task]:
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        TASKS[name] = factory
        TASK_SUMMARIES[name] = summary
        return factory

    return decorate


def get_task(name: str, **options) -> Task:
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    task = TASKS[name](**options)
    task.options = dict(options)
    return task


from lrkit.tasks import paper, sequence, synthetic, vision  # noqa: E402,F401  (registers the tasks)

__all__ = ["TASKS", "TASK_SUMMARIES", "Task", "TaskData", "classification_metrics", "get_task"]
