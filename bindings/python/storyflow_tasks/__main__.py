"""``python -m storyflow_tasks worker --store sqlite:/path/tasks.db --import myapp.tasks``: see ``_worker.py``."""

from __future__ import annotations

import sys

from ._worker import main

if __name__ == "__main__":
    sys.exit(main())
