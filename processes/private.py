"""Files only their owner may read: keystore passwords, client secrets, tokens.

A secret file is created with mode 0600 by ``os.open`` itself, so it is never readable by
others, not even for the moment between writing and a later chmod. A file already there
is removed first (its mode may be wider), never reopened.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a new file at ``path`` with mode 0600 (module docstring)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
