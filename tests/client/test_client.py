"""The Python client against a running service (real worker), and its event-stream reconnection."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest

from backprop_client import ApiError, Client, Event
from backprop_client.client import parse_sse
from tests.client.conftest import ROOT

XOR = "a,b,y\n" + "\n".join(f"{i % 2},{(i // 2) % 2},{'yes' if (i % 2) ^ ((i // 2) % 2) else 'no'}"
                            for i in range(40)) + "\n"
MLP = {"input_shape": [2], "layers": [{"type": "dense", "units": 8, "activation": "tanh"},
                                       {"type": "dense", "units": 2, "activation": "softmax"}]}


def test_the_client_imports_nothing_of_the_server():
    code = ("import sys, backprop_client, backprop_client.cli; "
            "bad = [m for m in ('fastapi', 'starlette', 'pydantic', 'sqlalchemy', 'numpy', 'celery', 'service',"
            " 'engine', 'workers', 'prometheus_client') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_round_trip(live, tmp_path):
    csv_path = tmp_path / "xor.csv"
    csv_path.write_text(XOR)
    with Client(live.url, live.key) as bp:
        assert bp.health()["status"] == "ok"
        ds = bp.upload_csv(csv_path, target="y")
        assert ds["name"] == "xor" and ds["n_samples"] == 40 and ds["task"] == "classification"
        assert ds["classes"] == ["no", "yes"]
        js = bp.create_dataset("arrays", [[0, 0], [0, 1], [1, 0], [1, 1]] * 5, [0.0, 1.0, 1.0, 0.0] * 5,
                               task="regression", feature_names=["a", "b"])
        assert js["task"] == "regression" and js["feature_names"] == ["a", "b"]
        from_bytes = bp.upload_csv(io.BytesIO(XOR.encode()), target="y", name="bytes")
        assert from_bytes["n_samples"] == 40
        assert {d["id"] for d in bp.list_datasets()["items"]} >= {ds["id"], js["id"], from_bytes["id"]}
        # NumPy arrays travel as a .npz archive: the same dataset as the JSON form; a saved .npz file too
        grid = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * 5, dtype=np.float32)
        as_npz = bp.create_dataset("arrays", grid, np.array([0.0, 1.0, 1.0, 0.0] * 5), task="regression",
                                   feature_names=["a", "b"])
        assert {k: as_npz[k] for k in ("task", "n_samples", "feature_names", "size_bytes")} == \
            {k: js[k] for k in ("task", "n_samples", "feature_names", "size_bytes")}
        npz_file = tmp_path / "images.npz"
        np.savez(npz_file, features=np.zeros((6, 2, 3), np.uint8), targets=np.array(["a", "b"] * 3))
        images = bp.upload_npz(npz_file)
        assert images["name"] == "images" and images["input_shape"] == [2, 3] and images["classes"] == ["a", "b"]
        back = bp.export_dataset(images["id"], "csv", to=tmp_path / "images.csv")
        assert (tmp_path / "images.csv").read_bytes() == back and back.startswith(b"x0,x1,x2,x3,x4,x5,target\n")
        assert bp.upload_csv(tmp_path / "images.csv", "target", input_shape=[2, 3])["classes"] == ["a", "b"]
        with pytest.raises(ValueError, match="targets holds Python objects"):
            bp.create_dataset("objects", grid, np.array([None] * 20, dtype=object))

        model = bp.create_model(MLP, name="xor-net")
        assert model["summary"]["total_params"] == 2 * 8 + 8 + 8 * 2 + 2
        assert bp.get_model(model["id"])["name"] == "xor-net"

        job = bp.create_job(model["id"], ds["id"], {"loss": "categorical_crossentropy", "epochs": 6},
                            optimizer={"type": "adam", "learning_rate": 0.05}, validation_split=0.25, seed=3)
        assert job["status"] == "queued" and job["config"]["optimizer"]["type"] == "adam"
        events = list(bp.events(job["id"]))
        assert all(isinstance(e, Event) for e in events)
        assert [e.data["epoch"] for e in events if e.type == "progress"] == [1, 2, 3, 4, 5, 6]
        assert events[-1].is_final and events[-1].data["status"] == "succeeded"
        done = bp.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded" and done["result_version"] == 1
        assert [h["epoch"] for h in done["history"]] == [1, 2, 3, 4, 5, 6]
        # the stream replays the rest from any id it sent
        rest = list(bp.events(job["id"], last_event_id=events[-4].id))
        assert [(e.type, e.id) for e in rest] == [(e.type, e.id) for e in events[-3:]]

        checkpoints = bp.list_checkpoints(job["id"])
        assert checkpoints["total"] >= 1 and all(1 <= c["epoch"] <= 6 for c in checkpoints["items"])
        assert bp.list_jobs(status="succeeded", model_id=model["id"])["total"] == 1
        whole = bp.list_jobs(model_id=model["id"])["items"][0]["history"]
        tail = bp.list_jobs(model_id=model["id"], history_tail=2)["items"][0]["history"]
        assert len(whole) == 6 and tail == whole[-2:]
        assert bp.list_versions(model["id"])["items"][0]["version"] == 1

        pred = bp.predict(model["id"], [[0, 0], [1, 0]])
        assert pred["version"] == 1 and len(pred["predictions"]) == 2 and pred["classes"] == ["no", "yes"]
        assert all(p in ("no", "yes") for p in pred["predictions"])
        by_name = bp.predict(model["id"], [{"a": 0, "b": 0}, {"b": 0, "a": 1}], version=1)
        assert by_name["predictions"] == pred["predictions"]
        scores = bp.evaluate(model["id"], ds["id"], metrics=["accuracy"])
        assert scores["n_samples"] == 40 and scores["version"] == 1 and set(scores["metrics"]) == {"loss", "accuracy"}
        own = bp.evaluate(model["id"], rows="validation")       # the 10 rows its job's validation_split held out
        assert (own["rows"], own["dataset_id"], own["n_samples"]) == ("validation", ds["id"], 10)
        assert own["metrics"]["loss"] == pytest.approx(done["history"][-1]["val_loss"], rel=1e-6)
        # a NumPy array travels as one .npy body: the same answer; bytes and a file path work too
        rows = np.array([[0, 0], [1, 0]], dtype=np.float32)
        as_npy = bp.predict(model["id"], rows)
        assert as_npy == pred
        npy_file = tmp_path / "rows.npy"
        np.save(npy_file, rows)
        assert bp.predict_npy(model["id"], npy_file, version=1) == pred
        assert bp.predict_npy(model["id"], npy_file.read_bytes()) == pred
        with pytest.raises(ApiError) as err:
            bp.predict(model["id"], np.zeros((2, 3)))
        assert err.value.status == 422 and "shape (3,)" in err.value.detail
        out = tmp_path / "m.npz"
        content = bp.export(model["id"], "npz", to=out)
        assert out.read_bytes() == content
        with np.load(out, allow_pickle=False) as z:
            assert len(z.files) > 0

        # a finished job carried on by a second one: its first six epochs are the first job's
        longer = bp.continue_job(job["id"], epochs=8)
        assert longer["config"]["continue_from"]["job_id"] == job["id"]
        longer = bp.wait(longer["id"], timeout=30)
        assert longer["status"] == "succeeded" and [h["epoch"] for h in longer["history"]] == list(range(1, 9))
        strip = [{k: v for k, v in h.items() if k != "seconds"} for h in longer["history"][:6]]
        assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in done["history"]]

        # errors: problem details as ApiError
        with pytest.raises(ApiError) as err:
            bp.create_model({"input_shape": [2], "layers": [{"type": "dense", "units": 0}]})
        assert err.value.status == 422 and err.value.errors and err.value.errors[0]["loc"][:2] == ["body", "layers"]
        with pytest.raises(ApiError) as err:
            bp.get_job("no-such-job")
        assert err.value.status == 404 and err.value.title == "Not found"
        with pytest.raises(ApiError) as err:
            list(bp.events("no-such-job"))
        assert err.value.status == 404

        # cancel a queued job of a model nobody trains... (the worker may have claimed it: both are fine)
        slow = bp.create_job(model["id"], ds["id"], loss="categorical_crossentropy", epochs=10_000, batch_size=1)
        cancelled = bp.cancel_job(slow["id"])
        assert cancelled["status"] in ("cancelled", "running")
        assert bp.wait(slow["id"], timeout=30)["status"] == "cancelled"

    with Client(live.url, "bp_wrong") as bad, pytest.raises(ApiError) as err:
        bad.list_models()
    assert err.value.status == 401


def test_class_weights_by_label(live):
    with Client(live.url, live.key) as bp:
        words = bp.upload_csv(io.BytesIO(XOR.encode()), target="y", name="class-weights")
        model = bp.create_model(MLP, name="class-weights-net")
        job = bp.create_job(model["id"], words["id"], loss="categorical_crossentropy", epochs=2,
                            class_weight={"yes": np.float32(3), "no": 1})
        assert job["config"]["class_weight"] == {"yes": 3.0, "no": 1.0}
        assert bp.wait(job["id"], timeout=30)["status"] == "succeeded"
        # number labels travel as strings that the server reads by value: 1 is the class 1
        numbers = bp.create_dataset("numbers", [[0, 0], [0, 1], [1, 0], [1, 1]] * 5, [0, 1, 1, 0] * 5)
        assert numbers["classes"] == [0, 1]
        job = bp.create_job(model["id"], numbers["id"], {"loss": "categorical_crossentropy"},
                            class_weight={np.int64(1): 2.5})
        assert job["config"]["class_weight"] == {"1": 2.5}
        balanced = bp.create_job(model["id"], numbers["id"], loss="categorical_crossentropy", class_weight="balanced")
        assert balanced["config"]["class_weight"] == "balanced"
        with pytest.raises(ApiError) as err:
            bp.create_job(model["id"], words["id"], loss="categorical_crossentropy", class_weight={"maybe": 2})
        assert err.value.status == 422 and err.value.errors[0]["loc"] == ["body", "class_weight", "maybe"]


def test_diagnostics_with_the_client(live):
    with Client(live.url, live.key) as bp:
        ds = bp.upload_csv(io.BytesIO(XOR.encode()), target="y", name="diagnostics")
        model = bp.create_model(MLP, name="diagnostics-net")
        job = bp.create_job(model["id"], ds["id"], loss="categorical_crossentropy", epochs=2, diagnostics=True)
        assert job["config"]["diagnostics"] is True
        done = bp.wait(job["id"], timeout=30)
        assert done["status"] == "succeeded"
        for row in done["history"]:
            assert list(row["weight_changes"]) == ["dense", "dense_1"] and list(row["activations"]) == ["dense"]
            assert 0 <= row["activations"]["dense"]["inactive"] <= 1 and row["weight_changes"]["dense"] > 0


def test_explain_with_the_client(live):
    with Client(live.url, live.key) as bp:
        ds = bp.upload_csv(io.BytesIO(XOR.encode()), target="y", name="explain")
        model = bp.create_model(MLP, name="explain-net")
        job = bp.create_job(model["id"], ds["id"], loss="categorical_crossentropy", epochs=30, seed=1,
                            optimizer={"type": "adam", "learning_rate": 0.05})
        assert bp.wait(job["id"], timeout=60)["status"] == "succeeded"
        out = bp.explain(model["id"], np.array([[1.0, 0.0], [1.0, 1.0]]), baseline=np.array([0.0, 0.0]), steps=200)
        assert out["baseline"] == [0.0, 0.0] and len(out["attributions"]) == 2 and out["steps"] == 200
        for attrs, o, b in zip(out["attributions"], out["outputs"], out["baseline_outputs"]):
            assert sum(attrs) == pytest.approx(o - b, abs=5e-3)
        predicted = bp.predict(model["id"], [[1.0, 0.0], [1.0, 1.0]])["predictions"]
        assert out["targets"] == predicted
        with pytest.raises(ApiError) as err:
            bp.explain(model["id"], [[1.0, 0.0]], target="maybe")
        assert err.value.status == 422 and err.value.errors[0]["loc"] == ["body", "target"]


def test_a_sweep_with_the_client(live):
    with Client(live.url, live.key) as bp:
        ds = bp.upload_csv(io.BytesIO(XOR.encode()), target="y", name="sweep-data")
        model = bp.create_model(MLP, name="sweep-net")
        sweep = bp.create_sweep(model["id"], ds["id"], {"optimizer.learning_rate": [0.01, 0.1], "batch_size": [8, 32]},
                                objective="val_accuracy", name="lr x batch", loss="categorical_crossentropy",
                                optimizer="adam", epochs=4, validation_split=0.25, metrics=["accuracy"],
                                class_weight={np.str_("yes"): np.float32(2)})
        assert (sweep["name"], sweep["status"], sweep["mode"]) == ("lr x batch", "running", "max")
        assert sweep["config"]["class_weight"] == {"yes": 2.0}
        assert [t["params"] for t in sweep["trials"]] == [{"optimizer.learning_rate": lr, "batch_size": bs}
                                                          for lr in (0.01, 0.1) for bs in (8, 32)]
        done = bp.wait_sweep(sweep["id"], timeout=60)
        assert done["status"] == "succeeded" and [t["status"] for t in done["trials"]] == ["succeeded"] * 4
        scores = [bp.get_job(t["job_id"])["history"][-1]["val_accuracy"] for t in done["trials"]]
        assert [t["objective"] for t in done["trials"]] == scores
        assert done["best"] == done["trials"][scores.index(max(scores))]
        assert bp.predict(model["id"], [[0, 1]], version=done["best"]["result_version"])["predictions"][0] in \
            ("yes", "no")
        assert [s["id"] for s in bp.list_sweeps(model_id=model["id"])["items"]] == [sweep["id"]]
        assert bp.cancel_sweep(sweep["id"])["status"] == "succeeded"       # nothing left to cancel

        with pytest.raises(TimeoutError):
            slow = bp.create_sweep(model["id"], ds["id"], {"batch_size": [1]}, loss="categorical_crossentropy",
                                   epochs=10_000)
            bp.wait_sweep(slow["id"], timeout=0.5, poll_s=0.1)
        with pytest.raises(ApiError) as err:
            bp.delete_sweep(slow["id"])
        assert err.value.status == 409
        bp.cancel_sweep(slow["id"])
        assert bp.wait_sweep(slow["id"], timeout=30)["status"] == "cancelled"
        bp.delete_sweep(slow["id"])
        with pytest.raises(ApiError) as err:
            bp.get_sweep(slow["id"])
        assert err.value.status == 404
        with pytest.raises(ApiError) as err:
            bp.create_sweep(model["id"], ds["id"], {"optimizer.learning_rate": [0.01, -1]}, optimizer="adam",
                            loss="categorical_crossentropy")
        assert err.value.status == 422 and err.value.errors[0]["loc"] == ["body", "grid", "optimizer.learning_rate", 1]


def test_events_resume_after_a_dropped_connection():
    """The connection drops after two events: the client reconnects with Last-Event-ID and sees each once."""
    stream = [
        ("1.1", "progress", {"epoch": 1}), ("2.1", "progress", {"epoch": 2}),
        ("3.1", "progress", {"epoch": 3}), ("3.3", "status", {"status": "succeeded"}),
    ]
    seen_ids: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        last = request.headers.get("last-event-id")
        seen_ids.append(last)
        start = 0 if last is None else [s[0] for s in stream].index(last) + 1

        def body():
            yield b"retry: 10\n\n: keep-alive\n\n"
            for n, (id_, kind, data) in enumerate(stream[start:]):
                if last is None and n == 2:
                    raise httpx.ReadError("connection reset")
                yield f"id: {id_}\nevent: {kind}\ndata: {json.dumps(data)}\n\n".encode()

        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    with Client("http://test", "k", transport=httpx.MockTransport(handler)) as bp:
        events = list(bp.events("j"))
    assert seen_ids == [None, "2.1"]
    assert [e.id for e in events] == ["1.1", "2.1", "3.1", "3.3"]
    assert events[-1].is_final


def test_parse_sse_follows_the_spec():
    lines = ["retry: 50", ": comment", "event: status", "id: 1.0", "data: {\"a\":", "data: 1}", "",
             "data:plain", "", "id: x\0y", "data: 2", ""]
    out = list(parse_sse(lines))
    assert out[0] == "retry:50" and out[1] == "comment"
    assert out[2] == Event("status", "1.0", {"a": 1})
    assert out[3] == Event("message", "1.0", "plain")
    assert out[4] == Event("message", "1.0", 2)  # an id with NUL is ignored; the last id stays
