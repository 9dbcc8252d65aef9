"""The schema revision this code expects, known without importing Alembic.

The running app compares the database against ``HEAD_REVISION`` at start-up;
importing Alembic on a worker's event loop would stall it for a second or more.
A test keeps this equal to the head of ``keel/db/migrations/versions``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HEAD_REVISION"]

HEAD_REVISION: Final = "0006"
