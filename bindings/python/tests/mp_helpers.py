"""Functions that multiprocessing children run; a module of their own so spawned children can import them."""

from __future__ import annotations

import os
from typing import Dict, List, Optional


def run_one_task_here(parent_task_ids: List[str]) -> Dict[str, object]:
    """In a child process: the parent's tasks are unknown here, and a task of its own runs to completion."""
    from storyflow_tasks import current_task_id, get_task_manager

    tm = get_task_manager()
    seen: List[Optional[str]] = []
    task_id = tm.submit_task(lambda: seen.append(current_task_id()))
    final = tm.wait(task_id, timeout=30)
    return {
        "pid": os.getpid(),
        "status": final["status"],
        "ran_here": seen == [task_id],
        "parent_tasks_visible": [tm.get_task_status(each) is not None for each in parent_task_ids],
        "listed": [s["task_id"] for s in tm.list_tasks()],
        "task_id": task_id,
    }
