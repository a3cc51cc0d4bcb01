"""``live_server(**setting_overrides)``: the app on a real uvicorn, on loopback, on a free port, with a key."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture(scope="module")
def live_server(make_settings, tmp_path_factory) -> Iterator[Callable[..., dict[str, Any]]]:
    import uvicorn

    from service.app import create_app
    from service.auth import create_api_key

    running: list[tuple[Any, threading.Thread, socket.socket]] = []

    def start(**overrides: Any) -> dict[str, Any]:
        db = tmp_path_factory.mktemp("live") / "backprop.db"
        app = create_app(make_settings(f"sqlite:///{db}", **overrides), enqueue=lambda job_id: None)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        srv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_keep_alive=5))
        thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((srv, thread, sock))
        deadline = time.monotonic() + 30
        while not srv.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        with app.state.session_factory() as s, s.begin():
            key = create_api_key(s, "live")
        port = sock.getsockname()[1]
        return {"port": port, "base": f"http://127.0.0.1:{port}", "key": key, "app": app}

    yield start
    for srv, thread, sock in running:
        srv.should_exit = True
        thread.join(10)
        sock.close()
