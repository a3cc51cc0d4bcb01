"""GET /metrics: Prometheus text with requests by route template, jobs, queue depth, throughput, checkpoints."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service.services import training_results
from tests.api.helpers import make_dataset, make_job, make_model, run_job_in_process

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{(i % 2) ^ ((i // 2) % 2)}" for i in range(40)) + "\n"


def scrape(client) -> dict[str, list]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples, name: str, **labels) -> float:
    hits = [v for lab, v in samples.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert len(hits) == 1, (name, labels, samples.get(name))
    return hits[0]


def test_metrics_after_some_traffic(client, auth, session_factory):
    before = scrape(client)
    ds = make_dataset(client, auth, XOR)  # 40 rows
    m = make_model(client, auth)
    done = make_job(client, auth, m["id"], ds["id"], epochs=3, checkpoint_every=1)
    run_job_in_process(session_factory, done["id"])
    running = make_job(client, auth, m["id"], ds["id"], epochs=5, validation_split=0.25)
    queued = make_job(client, auth, m["id"], ds["id"])
    with session_factory() as s, s.begin():
        assert training_results.claim_job(s, running["id"], "w")
        training_results.record_epoch(s, running["id"], {"loss": 1.0, "seconds": 0.5}, 1, worker="w")
    for job in (done, running, queued):
        assert client.get(f"/v1/jobs/{job['id']}", headers=auth).status_code == 200
    assert client.get("/v1/jobs/no-such-job", headers=auth).status_code == 404
    assert client.get("/no/such/path/12345").status_code == 404

    after = scrape(client)
    route = "/v1/jobs/{job_id}"

    def delta(**labels) -> float:
        old = [v for lab, v in before.get("backprop_http_requests_total", [])
               if all(lab.get(k) == w for k, w in labels.items())]
        return value(after, "backprop_http_requests_total", **labels) - (old[0] if old else 0.0)

    assert delta(method="GET", route=route, status="200") == 3
    assert delta(method="GET", route=route, status="404") == 1
    assert delta(method="POST", route="/v1/jobs", status="202") == 3
    assert delta(method="GET", route="unmatched", status="404") == 1
    labels = {lab["route"] for lab, _ in after["backprop_http_requests_total"]}
    assert not any("no-such-job" in r or "12345" in r for r in labels)  # templates, never raw paths
    assert value(after, "backprop_http_request_duration_seconds_count", method="GET", route=route) >= 4

    # jobs by status and the queue, from the database at scrape time (other tests of this module share it)
    assert value(after, "backprop_jobs", status="queued") >= 1
    assert value(after, "backprop_jobs", status="running") >= 1
    assert value(after, "backprop_jobs", status="succeeded") >= 1
    assert value(after, "backprop_queue_depth") == value(after, "backprop_jobs", status="queued")
    # 40 rows less a validation split of 0.25 = 30 training rows in 0.5 s
    assert value(after, "backprop_training_samples_per_second", job_id=running["id"]) == 60.0
    assert value(after, "backprop_training_samples_per_second_total") >= 60.0
    # checkpoints: the finished job keeps its last (and best) ones
    count = value(after, "backprop_checkpoint_size_bytes_count")
    assert count >= 1 and value(after, "backprop_checkpoint_size_bytes_sum") > 0
    assert value(after, "backprop_checkpoint_size_bytes_bucket", le="+Inf") == count
    assert value(after, "backprop_database_up") == 1


def test_metrics_is_public_and_in_openapi(client):
    assert client.get("/metrics").status_code == 200  # no key: Prometheus scrapes without one
    assert "/metrics" in client.get("/openapi.json").json()["paths"]
