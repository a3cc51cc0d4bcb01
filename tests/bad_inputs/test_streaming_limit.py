"""Bodies over ``max_upload_bytes`` are refused while they stream, before the server could hold them whole.

Against a real uvicorn on loopback, with raw sockets: the client sends a chunked body (no Content-Length) past the
limit and then stops *without finishing it*. The 413 problem arrives anyway, so the server decided on the bytes
seen so far; it never waited for (let alone buffered) the whole body. A declared Content-Length over the limit is
refused before a single body byte is sent.
"""
from __future__ import annotations

import json
import socket

import pytest
from sqlalchemy import func, select

from service.db.models import Dataset, Model

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(live_server) -> dict:
    return live_server(max_upload_bytes=LIMIT)


def _counts(app) -> tuple[int, int]:
    with app.state.session_factory() as s:
        return (s.scalar(select(func.count()).select_from(Dataset)), s.scalar(select(func.count()).select_from(Model)))


def _open(server, path: str, ctype: str, extra: str = "") -> socket.socket:
    conn = socket.create_connection(("127.0.0.1", server["port"]), timeout=10)
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server['key']}\r\n"
            f"Content-Type: {ctype}\r\n{extra}\r\n")
    conn.sendall(head.encode())
    return conn


def _read_response(conn: socket.socket) -> tuple[int, dict, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def _send_chunked_without_end(conn: socket.socket, total: int, chunk: bytes) -> int:
    sent = 0
    while sent < total:
        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sent += len(chunk)
    return sent  # and no terminating 0-length chunk: the body is never complete


@pytest.mark.parametrize("route, ctype, first", [
    ("/v1/models", "application/json", b'{"name": "' + b"x" * 1000),
    ("/v1/datasets", "application/json", b'{"name": "d", "features": [' + b"[1, 2], " * 100),
    ("/v1/models/abc/predict", "application/json", b'{"inputs": [' + b"[1, 2], " * 100),
    ("/v1/jobs", "application/json", b'{"model_id": "' + b"m" * 1000),
    ("/v1/datasets", "multipart/form-data; boundary=XyZ",
     b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="d.csv"\r\n\r\na,y\n' + b"1,0\n" * 100),
])
def test_chunked_body_over_the_limit_is_refused_before_it_ends(server, route, ctype, first):
    before = _counts(server["app"])
    conn = _open(server, route, ctype, "Transfer-Encoding: chunked\r\n")
    try:
        conn.sendall(b"%x\r\n%s\r\n" % (len(first), first))
        try:
            _send_chunked_without_end(conn, 2 * LIMIT, b"1," * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may stop reading once it has answered
        status, headers, body = _read_response(conn)
    finally:
        conn.close()
    assert status == 413, (status, body[:300])
    assert headers["content-type"].startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["status"] == 413 and "max_upload_bytes" in problem["detail"]
    assert _counts(server["app"]) == before


def test_declared_length_over_the_limit_is_refused_before_any_body(server):
    conn = _open(server, "/v1/datasets", "application/json", f"Content-Length: {50 * 1024 * 1024}\r\n")
    try:
        status, headers, body = _read_response(conn)  # not one body byte was sent
    finally:
        conn.close()
    assert status == 413 and "max_upload_bytes" in json.loads(body)["detail"]


def test_server_is_healthy_after_refusals(server):
    import httpx

    base = f"http://127.0.0.1:{server['port']}"
    auth = {"Authorization": f"Bearer {server['key']}"}
    assert httpx.get(f"{base}/healthz").status_code == 200
    r = httpx.post(f"{base}/v1/models", headers=auth, json={
        "name": "ok", "input_shape": [2], "layers": [{"type": "dense", "units": 2, "activation": "softmax"}]})
    assert r.status_code == 201, r.text
    # a body just under the limit, chunked, is read to its end and answered normally
    payload = json.dumps({"name": "d", "features": [[1, 2]] * 4000, "targets": [0, 1] * 2000}).encode()
    assert len(payload) < LIMIT

    def chunks():
        for i in range(0, len(payload), 4096):
            yield payload[i:i + 4096]

    r = httpx.post(f"{base}/v1/datasets", headers={**auth, "content-type": "application/json"}, content=chunks())
    assert r.status_code == 201, r.text
