"""Automatic garbage collection held off while a large request body is alive in the API process.

Why: a large JSON body decodes into tens of thousands of Python lists (a 16 MiB dataset is 20,000 row lists,
2 million slots). CPython's collector traverses every live container, and a full collection that lands while
such a body is alive holds the GIL for 80 ms or more (measured): every other request of the process, single-row
predictions included, waits that long. The rows hold no reference cycles, so nothing is lost by not collecting
while they live; reference counting frees them when the request ends.

The pause is counted: it starts with the first large body and ends with the last, so that overlapping uploads
keep it. So that a steady stream of overlapping uploads cannot keep cyclic garbage from other requests forever,
a pause older than ``MAX_PAUSE_S`` runs one collection when any of its holders leaves, and starts its clock again.
If something else turned automatic collection off before the pause began, the pause leaves it off.
"""
from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: A pause older than this collects once when a holder leaves (bounds garbage under unbroken overlap).
MAX_PAUSE_S = 30.0


class CollectionPause:
    def __init__(self, max_pause_s: float = MAX_PAUSE_S) -> None:
        self.max_pause_s = max_pause_s
        self._lock = threading.Lock()
        self._holders = 0
        self._restore = False        # re-enable at the end: it was enabled when the pause began
        self._since = 0.0
        self.collections = 0         # collections run because a pause grew too old

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._restore = gc.isenabled()
                self._since = time.monotonic()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0:
                    if self._restore:
                        gc.enable()
                elif time.monotonic() - self._since > self.max_pause_s:
                    self._since = time.monotonic()
                    self.collections += 1
                    gc.collect()

    @property
    def holders(self) -> int:
        return self._holders


#: The API process's one pause (gc's switch is process-wide).
collection_paused = CollectionPause()

