"""The app's data cache: one transaction's details, kept in a store every worker shares.

`LAB_CACHE_DIR` (or the app config key of that name) turns it on: Flask-Caching's
FileSystemCache in that folder, one store for every gunicorn worker and thread on this machine
(a per-process SimpleCache invalidated by one worker would stay stale in the others). Unset,
it is Flask-Caching's NullCache: every read goes to the database, as if there were no cache.

The rule that keeps it fresh: the read and its invalidation build the key the same way. The
app memoizes `api_transaction(tx_id)` and deletes with `delete_memoized(api_transaction, tx_id)`
given the same int id: Flask-Caching's memoize key is a hash of the function's name and of
str() of its arguments, so `(7,)` and `('7',)` are two keys, and deleting one leaves the other.

With lab mode on and `LAB_CACHE_LOG` set, every get / set / delete of a key is appended to
that file (process, key, hit or miss), so a scenario can name the key a read used and the key
an edit deleted.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from flask import Flask
from flask_caching import Cache

DEFAULT_TIMEOUT_SECONDS = 300
_LOG_LOCK = threading.Lock()


def config_for(app: Flask) -> dict[str, Any]:
    directory = app.config.get("LAB_CACHE_DIR") or os.environ.get("LAB_CACHE_DIR")
    if not directory:
        return {"CACHE_TYPE": "NullCache", "CACHE_NO_NULL_WARNING": True}
    return {"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": str(directory),
            "CACHE_DEFAULT_TIMEOUT": DEFAULT_TIMEOUT_SECONDS}


class LoggedCache(Cache):
    """Flask-Caching's Cache, that (in lab mode, with LAB_CACHE_LOG) logs each key it touches."""

    def get(self, key: str, *args: Any, **kwargs: Any) -> Any:
        value = super().get(key, *args, **kwargs)
        _log("get", key, hit=value is not None)
        return value

    def set(self, key: str, *args: Any, **kwargs: Any) -> bool | None:
        _log("set", key)
        return super().set(key, *args, **kwargs)

    def delete(self, key: str, *args: Any, **kwargs: Any) -> bool:
        # Asked before the delete: FileSystemCache.delete answers True for a missing key too.
        existed = self.has(key) if _logging() else None
        deleted = super().delete(key, *args, **kwargs)
        _log("delete", key, existed=existed)
        return deleted


def install(app: Flask) -> Cache:
    """The app's data cache, configured from LAB_CACHE_DIR (NullCache without it)."""
    return LoggedCache(app, config=config_for(app))


def _logging() -> bool:
    return bool(os.environ.get("LAB_CACHE_LOG")) and os.environ.get("LAB_MODE") == "1"


def _log(operation: str, key: str, **details: Any) -> None:
    if not _logging():
        return
    path = os.environ["LAB_CACHE_LOG"]
    line = json.dumps({"op": operation, "key": key, "pid": os.getpid(), **details})
    with _LOG_LOCK, open(path, "a", encoding="utf-8") as log:
        log.write(line + "\n")
