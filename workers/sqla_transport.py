"""The embedded broker as the worker consumes it: kombu's SQLAlchemy transport, polled every 0.1 s and never
waited on for more than a quarter of a second at a time.

Celery's consumer loop for transports without an event loop asks for messages with a 2 s timeout and looks at
its shutdown flag only between two such waits. A SIGTERM (Ctrl-C on ``backprop up``) therefore went unanswered
for 2-3 s before the worker even began to stop. A timed wait here ends after at most ``LONGEST_WAIT_S`` with
the same ``socket.timeout`` the full wait would have ended with, and the loop, which treats that as "nothing
yet", checks its flag and asks again. An untimed wait (``timeout=None``) is left as kombu has it.

``workers.celery_app`` points kombu's ``sqla`` and ``sqlalchemy`` aliases here, in the worker only; the API
sends through kombu's own class.
"""
from __future__ import annotations

from kombu.transport import sqlalchemy as kombu_sqla

#: Seconds between two polls of the broker's table. kombu reads this only as a class attribute: as a
#: transport option it would be handed to create_engine() and crash the worker. At 0.1 s a message
#: starts about 60 ms after it is sent.
POLLING_INTERVAL_S = 0.1

#: The longest one timed wait for messages lasts before the consumer loop gets control back.
LONGEST_WAIT_S = 0.25


class Transport(kombu_sqla.Transport):
    polling_interval = POLLING_INTERVAL_S

    def drain_events(self, connection, timeout=None):
        if timeout is not None:
            timeout = min(timeout, LONGEST_WAIT_S)
        return super().drain_events(connection, timeout=timeout)
