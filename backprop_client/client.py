"""A typed client for the Backprop HTTP API (v1), over httpx and the standard library only."""
from __future__ import annotations

import io
import os
import time
from contextlib import closing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast

import httpx

from backprop_client.types import (
    Checkpoint,
    Dataset,
    Evaluation,
    Event,
    Explanation,
    FINAL_STATUSES,
    Job,
    Model,
    Page,
    Prediction,
    Sweep,
    Version,
)

__all__ = ["ApiError", "Client", "parse_sse"]

USER_AGENT = "backprop-client/0.1"
NPY_MEDIA_TYPE = "application/x-npy"


def _is_ndarray(value: Any) -> bool:
    """A NumPy array, told without importing NumPy (the client does not need it otherwise)."""
    return type(value).__module__ == "numpy" and hasattr(value, "dtype") and hasattr(value, "shape")


def _file_content(file: str | os.PathLike[str] | bytes | IO[bytes], default: str) -> tuple[bytes | IO[bytes], str, str]:
    """(content, file name, name stem) of a path, bytes or an open binary file."""
    if isinstance(file, (str, os.PathLike)):
        path = Path(file)
        return path.read_bytes(), path.name, path.stem
    filename = os.path.basename(str(getattr(file, "name", None) or default))
    return file, filename, Path(filename).stem


def _savez(features: Any, targets: Any, feature_names: Sequence[str] | None,
           target_names: Sequence[str] | None) -> bytes:
    """A dataset archive of NumPy arrays; an array of Python objects is refused here (it would be pickled)."""
    import numpy

    arrays = {"features": numpy.asarray(features), "targets": numpy.asarray(targets)}
    for key, names in (("feature_names", feature_names), ("target_names", target_names)):
        if names is not None:
            arrays[key] = numpy.asarray([str(n) for n in names])
    for key, array in arrays.items():
        if array.dtype.hasobject:
            raise ValueError(f"{key} holds Python objects: give numbers (or strings for target labels)")
    buf = io.BytesIO()
    numpy.savez(buf, **arrays)
    return buf.getvalue()


def _class_weight_json(class_weight: str | Mapping[Any, float]) -> str | dict[str, float]:
    """A job's class_weight as JSON takes it: object keys are strings; NumPy numbers become plain floats."""
    if isinstance(class_weight, str):
        return class_weight
    return {str(label): float(weight) for label, weight in class_weight.items()}


class ApiError(Exception):
    """An error answer of the API, from its RFC 9457 problem details.

    ``errors`` lists ``{"loc": [...], "msg": ...}`` for validation errors (422), else it is empty."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, Any]] | None = None,
        type: str | None = None,
        body: Any = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.type = type
        self.body = body
        super().__init__(f"{status} {title}: {detail}")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "status" in body and ("title" in body or "detail" in body):
            return cls(
                int(body.get("status") or response.status_code),
                str(body.get("title") or response.reason_phrase),
                str(body.get("detail") or ""),
                body.get("errors") if isinstance(body.get("errors"), list) else None,
                body.get("type"),
                body,
            )
        text = response.text[:500] if body is None else str(body)[:500]
        return cls(response.status_code, response.reason_phrase or "Error", text, None, None, body)


def parse_sse(lines: Iterable[str]) -> Iterator[Event | str]:
    """Server-sent events from the lines of a ``text/event-stream`` (the WHATWG rules: ``field: value``,
    ``data`` lines joined by newlines, a blank line dispatches). Yields :class:`Event`s, and the text of each
    comment line (keep-alives) as a ``str``; a ``retry`` field is yielded as ``"retry:<ms>"``."""
    event, data, id_ = "", [], None
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data or event:
                yield Event.from_fields(event, id_, "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            yield line[1:].strip()
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            if "\0" not in value:
                id_ = value
        elif name == "retry" and value.isdigit():
            yield f"retry:{value}"
    if data:
        yield Event.from_fields(event, id_, "\n".join(data))


class Client:
    """``Client(base_url, api_key)``; every method answers the API's JSON as a typed dict, or raises
    :class:`ApiError`. Use as a context manager, or call :meth:`close`.

    >>> with Client("http://127.0.0.1:8000", "bp_...") as bp:
    ...     ds = bp.upload_csv("iris.csv", target="species")
    ...     model = bp.create_model({"input_shape": [4], "layers": [{"type": "dense", "units": 3,
    ...                                                              "activation": "softmax"}]})
    ...     job = bp.create_job(model["id"], ds["id"], loss="categorical_crossentropy", epochs=50)
    ...     for event in bp.events(job["id"]):
    ...         print(event.type, event.data)
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    # -- plumbing ------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    @staticmethod
    def _page(limit: int, offset: int, **filters: Any) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        params.update({k: v for k, v in filters.items() if v is not None})
        return params

    # -- operations ----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return cast(dict, self._json("GET", "/healthz"))

    def ready(self) -> dict[str, Any]:
        return cast(dict, self._json("GET", "/readyz"))

    # -- datasets ------------------------------------------------------------------------------------

    def upload_csv(
        self,
        file: str | os.PathLike[str] | bytes | IO[bytes],
        target: str | Sequence[str],
        *,
        name: str | None = None,
        task: str | None = None,
        input_shape: str | Sequence[int] | None = None,
    ) -> Dataset:
        """Upload a CSV file (with a header row). ``target``: the target column, or several."""
        content, filename, stem = _file_content(file, "data.csv")
        form = {"target": target if isinstance(target, str) else ",".join(target)}
        return self._upload(content, filename, "text/csv", name or stem, task, input_shape, form)

    def upload_npz(
        self,
        file: str | os.PathLike[str] | bytes | IO[bytes],
        *,
        name: str | None = None,
        task: str | None = None,
        input_shape: str | Sequence[int] | None = None,
    ) -> Dataset:
        """Upload a .npz archive written by ``numpy.savez(file, features=X, targets=y)`` (optionally with
        ``feature_names=`` and ``target_names=``): the server reads the arrays without parsing, the fastest
        form for large datasets. Features shaped (rows, *input_shape) carry their input shape."""
        content, filename, stem = _file_content(file, "data.npz")
        return self._upload(content, filename, "application/octet-stream", name or stem, task, input_shape, {})

    def _upload(
        self, content: bytes | IO[bytes], filename: str, media_type: str, name: str, task: str | None,
        input_shape: str | Sequence[int] | None, form: dict[str, str],
    ) -> Dataset:
        form = {"name": name, **form}
        if task:
            form["task"] = task
        if input_shape is not None:
            form["input_shape"] = input_shape if isinstance(input_shape, str) else ",".join(map(str, input_shape))
        return cast(
            Dataset,
            self._json("POST", "/v1/datasets", data=form, files={"file": (filename, content, media_type)}),
        )

    def create_dataset(
        self,
        name: str,
        features: Sequence[Sequence[Any]] | Any,
        targets: Sequence[Any] | Any,
        *,
        task: str | None = None,
        input_shape: Sequence[int] | None = None,
        feature_names: Sequence[str] | None = None,
        target_names: Sequence[str] | None = None,
    ) -> Dataset:
        """A dataset from arrays: one feature row per sample, one target (or a list) per sample. NumPy features
        travel as a .npz archive (see :meth:`upload_npz`), anything else as JSON."""
        if _is_ndarray(features):
            return self.upload_npz(_savez(features, targets, feature_names, target_names), name=name, task=task,
                                   input_shape=input_shape)
        body: dict[str, Any] = {"name": name, "features": [list(r) for r in features], "targets": list(targets)}
        for key, value in (("task", task), ("input_shape", input_shape), ("feature_names", feature_names),
                           ("target_names", target_names)):
            if value is not None:
                body[key] = value if isinstance(value, str) else list(value)
        return cast(Dataset, self._json("POST", "/v1/datasets", json=body))

    def list_datasets(self, *, limit: int = 50, offset: int = 0) -> Page[Dataset]:
        return cast(Page[Dataset], self._json("GET", "/v1/datasets", params=self._page(limit, offset)))

    def get_dataset(self, dataset_id: str) -> Dataset:
        return cast(Dataset, self._json("GET", f"/v1/datasets/{dataset_id}"))

    def export_dataset(
        self, dataset_id: str, format: str = "npz", *, to: str | os.PathLike[str] | None = None
    ) -> bytes:
        """The dataset as it can be uploaded again (``npz``: :meth:`upload_npz`; ``csv``: :meth:`upload_csv`
        with the target names); written to ``to`` when given."""
        content = self._request("GET", f"/v1/datasets/{dataset_id}/export", params={"format": format}).content
        if to is not None:
            Path(to).write_bytes(content)
        return content

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    # -- models --------------------------------------------------------------------------------------

    def create_model(self, spec: Mapping[str, Any], *, name: str | None = None) -> Model:
        """``spec``: ``{"input_shape", "layers"}`` (optionally with ``name``), ``{"keras": ...}``, or the JSON
        of a Keras ``model.to_json()`` itself."""
        spec = dict(spec)
        if "class_name" in spec and "config" in spec and "layers" not in spec:  # Keras's own JSON
            spec = {"keras": spec}
        body = {**spec, "name": name or spec.get("name") or "model"}
        return cast(Model, self._json("POST", "/v1/models", json=body))

    def list_models(self, *, limit: int = 50, offset: int = 0) -> Page[Model]:
        return cast(Page[Model], self._json("GET", "/v1/models", params=self._page(limit, offset)))

    def get_model(self, model_id: str) -> Model:
        return cast(Model, self._json("GET", f"/v1/models/{model_id}"))

    def delete_model(self, model_id: str) -> None:
        self._request("DELETE", f"/v1/models/{model_id}")

    def rename_model(self, model_id: str, name: str) -> Model:
        return cast(Model, self._json("PATCH", f"/v1/models/{model_id}", json={"name": name}))

    def set_serving_version(self, model_id: str, version: int | None) -> Model:
        """Pin the version that predict, evaluate and export use when they name none; None unpins (the latest
        version serves). Later jobs' versions do not move a pin."""
        return cast(Model, self._json("PATCH", f"/v1/models/{model_id}", json={"serving_version": version}))

    def list_versions(self, model_id: str, *, limit: int = 50, offset: int = 0) -> Page[Version]:
        return cast(
            Page[Version], self._json("GET", f"/v1/models/{model_id}/versions", params=self._page(limit, offset))
        )

    # -- jobs ----------------------------------------------------------------------------------------

    def create_job(
        self, model_id: str, dataset_id: str, config: Mapping[str, Any] | None = None, *,
        class_weight: str | Mapping[Any, float] | None = None, **options: Any
    ) -> Job:
        """Queue a training job. ``config`` and ``options`` are the fit configuration (``loss``,
        ``optimizer``, ``epochs``, ``batch_size``, ``validation_split``, ``validation_rows``, ``seed``,
        ``metrics``...); ``options`` win.

        ``class_weight``: Keras's, ``{label: weight}`` with the dataset's own labels (``{"no": 1, "yes": 5}``; a
        class left out weighs 1), or ``"balanced"``. Labels that are not strings are sent as ``str(label)``, which
        the server matches by value (1 and 1.0 are the class 1)."""
        body = {**(dict(config) if config else {}), **options, "model_id": model_id, "dataset_id": dataset_id}
        if class_weight is not None:
            body["class_weight"] = _class_weight_json(class_weight)
        return cast(Job, self._json("POST", "/v1/jobs", json=body))

    def get_job(self, job_id: str, *, history_tail: int | None = None) -> Job:
        """``history_tail``: only the last that many rows of the job's history (default: all)."""
        params = {} if history_tail is None else {"history_tail": history_tail}
        return cast(Job, self._json("GET", f"/v1/jobs/{job_id}", params=params))

    def list_jobs(
        self, *, status: str | None = None, model_id: str | None = None, sweep_id: str | None = None,
        limit: int = 50, offset: int = 0, history_tail: int | None = None,
    ) -> Page[Job]:
        """``history_tail``: only the last that many rows of each job's history (default: all); ``sweep_id``:
        only that sweep's trials."""
        params = self._page(limit, offset, status=status, model_id=model_id, sweep_id=sweep_id,
                            history_tail=history_tail)
        return cast(Page[Job], self._json("GET", "/v1/jobs", params=params))

    def cancel_job(self, job_id: str) -> Job:
        return cast(Job, self._json("POST", f"/v1/jobs/{job_id}/cancel"))

    def continue_job(self, job_id: str, *, epochs: int | None = None) -> Job:
        """A new queued job carrying ``job_id``'s fit on from its latest checkpoint to ``epochs`` in all
        (default: the job's own, which finishes a cancelled job); the result equals one job of that many
        epochs."""
        return cast(Job, self._json("POST", f"/v1/jobs/{job_id}/continue",
                                    json={"epochs": epochs} if epochs is not None else None))

    def list_checkpoints(self, job_id: str, *, limit: int = 50, offset: int = 0) -> Page[Checkpoint]:
        return cast(
            Page[Checkpoint],
            self._json("GET", f"/v1/jobs/{job_id}/checkpoints", params=self._page(limit, offset)),
        )

    def events(
        self,
        job_id: str,
        *,
        last_event_id: str | None = None,
        reconnect: bool = True,
        max_retries: int = 10,
        read_timeout: float = 60.0,
    ) -> Iterator[Event]:
        """The job's live events (``status`` and ``progress``), until its final status.

        A dropped connection is resumed from the last event received (``Last-Event-ID``), so every epoch is
        seen once; up to ``max_retries`` failed reconnections in a row, waiting as the server asks."""
        for item in self._stream(job_id, last_event_id, reconnect, max_retries, read_timeout):
            if isinstance(item, Event):
                yield item

    def _stream(
        self,
        job_id: str,
        last_event_id: str | None,
        reconnect: bool,
        max_retries: int,
        read_timeout: float,
    ) -> Iterator[Event | None]:
        """Events, and None for each keep-alive (so that callers can check a deadline)."""
        retry_s = 1.0
        failures = 0
        timeout = httpx.Timeout(30.0, read=read_timeout)
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            try:
                with self._http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise ApiError.from_response(response)
                    for item in parse_sse(response.iter_lines()):
                        if isinstance(item, str):
                            if item.startswith("retry:"):
                                retry_s = int(item[6:]) / 1000.0
                            else:
                                yield None
                            continue
                        failures = 0
                        if item.id:
                            last_event_id = item.id
                        yield item
                        if item.is_final:
                            return
            except httpx.TransportError:
                if not reconnect or failures >= max_retries:
                    raise
            else:
                # The stream ended with no final status (the server restarted): resume it.
                if not reconnect or failures >= max_retries:
                    return
            failures += 1
            time.sleep(min(retry_s * failures, 30.0))

    def wait(self, job_id: str, *, timeout: float | None = None, poll_s: float = 1.0) -> Job:
        """Block until the job ends (succeeded, failed or cancelled) and return it; ``TimeoutError`` after
        ``timeout`` seconds. Follows the event stream, and falls back to polling if the stream is
        unavailable."""
        deadline = None if timeout is None else time.monotonic() + timeout
        read_timeout = 60.0 if timeout is None else max(min(timeout, 60.0), 1.0)
        try:
            with closing(self._stream(job_id, None, True, 5, read_timeout)) as stream:
                for item in stream:
                    if isinstance(item, Event) and item.is_final:
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
        except (httpx.TransportError, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status in (401, 403, 404):
                raise
        while True:
            job = self.get_job(job_id, history_tail=0)     # polls stay small however long the history
            if job["status"] in FINAL_STATUSES:
                return self.get_job(job_id)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not finish within {timeout} s")
            time.sleep(poll_s)

    # -- sweeps --------------------------------------------------------------------------------------

    def create_sweep(
        self, model_id: str, dataset_id: str, grid: Mapping[str, Sequence[Any]], *, objective: str | None = None,
        mode: str | None = None, name: str | None = None, folds: int | None = None, **config: Any,
    ) -> Sweep:
        """Try every combination of the ``grid``'s values: one training job per combination, each the base
        ``config`` (the fit configuration of :meth:`create_job`) with its values set at their dotted paths::

            bp.create_sweep(model_id, dataset_id, {"optimizer.learning_rate": [0.001, 0.01], "batch_size": [16, 64]},
                            objective="val_accuracy", loss="sparse_categorical_crossentropy", optimizer="adam",
                            epochs=20, validation_split=0.2, metrics=["accuracy"])

        ``objective`` ranks the trials (default: ``val_loss`` when they have validation data, else ``loss``);
        ``mode`` is ``"min"``, ``"max"`` or ``"auto"``. ``folds=k``: k-fold cross-validation of every grid point
        (``validation_rows`` in ``config`` deals the rows to the folds), ranked in ``["cross_validation"]`` by the
        mean of its folds' objectives."""
        if config.get("class_weight") is not None:
            config["class_weight"] = _class_weight_json(config["class_weight"])
        body: dict[str, Any] = {"model_id": model_id, "dataset_id": dataset_id, "config": config,
                                "grid": {str(path): list(values) for path, values in grid.items()}}
        for key, value in (("objective", objective), ("mode", mode), ("name", name), ("folds", folds)):
            if value is not None:
                body[key] = value
        return cast(Sweep, self._json("POST", "/v1/sweeps", json=body))

    def get_sweep(self, sweep_id: str) -> Sweep:
        """The sweep with each trial's status and objective, and its best trial so far."""
        return cast(Sweep, self._json("GET", f"/v1/sweeps/{sweep_id}"))

    def list_sweeps(self, *, model_id: str | None = None, limit: int = 50, offset: int = 0) -> Page[Sweep]:
        return cast(Page[Sweep], self._json("GET", "/v1/sweeps", params=self._page(limit, offset, model_id=model_id)))

    def cancel_sweep(self, sweep_id: str) -> Sweep:
        """Cancel every trial still queued or running."""
        return cast(Sweep, self._json("POST", f"/v1/sweeps/{sweep_id}/cancel"))

    def refit_sweep(self, sweep_id: str) -> Job:
        """Queue a job that trains a cross-validation sweep's best point on every row (its fold versions each
        saw only part of them)."""
        return cast(Job, self._json("POST", f"/v1/sweeps/{sweep_id}/refit"))

    def delete_sweep(self, sweep_id: str) -> None:
        """Delete the sweep (refused while a trial is queued or running); its jobs and versions stay."""
        self._request("DELETE", f"/v1/sweeps/{sweep_id}")

    def wait_sweep(self, sweep_id: str, timeout: float | None = None, *, poll_s: float = 1.0) -> Sweep:
        """Block until no trial is queued or running and return the sweep; ``TimeoutError`` after ``timeout``
        seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            sweep = self.get_sweep(sweep_id)
            if sweep["status"] != "running":
                return sweep
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"sweep {sweep_id} did not finish within {timeout} s")
            time.sleep(poll_s if deadline is None else max(min(poll_s, deadline - time.monotonic()), 0.01))

    # -- predictions and exports ---------------------------------------------------------------------

    def predict(
        self, model_id: str, inputs: Sequence[Sequence[Any] | Mapping[str, Any]] | Any, *, version: int | None = None
    ) -> Prediction:
        """Rows as lists in the dataset's feature order, or objects keyed by feature name. A NumPy array of rows
        is sent as one .npy body (see :meth:`predict_npy`) instead of JSON."""
        if _is_ndarray(inputs):
            return self.predict_npy(model_id, inputs, version=version)
        body: dict[str, Any] = {"inputs": [dict(r) if isinstance(r, Mapping) else list(r) for r in inputs]}
        if version is not None:
            body["version"] = version
        return cast(Prediction, self._json("POST", f"/v1/models/{model_id}/predict", json=body))

    def predict_npy(
        self, model_id: str, rows: Any, *, version: int | None = None
    ) -> Prediction:
        """Rows as one .npy array: a NumPy array (integers or floats, shaped (rows, features), (rows,
        *input_shape) or (features,) for one row), the bytes ``numpy.save`` writes, or a .npy file's path. For
        long or wide batches: a 1,000 x 784 batch is 3 MiB of float32 instead of 15 MiB of JSON, and the server
        reads it without parsing."""
        if _is_ndarray(rows):
            import numpy

            buf = io.BytesIO()
            numpy.save(buf, rows, allow_pickle=False)
            content = buf.getvalue()
        elif isinstance(rows, (bytes, bytearray, memoryview)):
            content = bytes(rows)
        else:
            content = Path(rows).read_bytes()
        params = {"version": version} if version is not None else None
        return cast(Prediction, self._json("POST", f"/v1/models/{model_id}/predict", content=content,
                                           headers={"content-type": NPY_MEDIA_TYPE}, params=params))

    def evaluate(
        self, model_id: str, dataset_id: str | None = None, *, rows: str | None = None, version: int | None = None,
        loss: str | None = None, metrics: Sequence[str] | None = None,
    ) -> Evaluation:
        """The loss and metrics of a trained version on a stored dataset (rows held out of training, say);
        the loss and metrics default to those the version was trained with. ``rows="validation"`` (or
        ``"training"``) with no ``dataset_id`` scores the rows the version's own job validated (trained) on."""
        body: dict[str, Any] = {}
        for key, value in (("dataset_id", dataset_id), ("rows", rows), ("version", version), ("loss", loss)):
            if value is not None:
                body[key] = value
        if metrics is not None:
            body["metrics"] = list(metrics)
        return cast(Evaluation, self._json("POST", f"/v1/models/{model_id}/evaluate", json=body))

    def explain(
        self, model_id: str, inputs: Sequence[Any], *, target: Any = None, baseline: Any = None,
        steps: int | None = None, version: int | None = None,
    ) -> Explanation:
        """Each feature's integrated gradient for one output of each row (``target``: a class, a label or a
        target column; default: the predicted class, or the only column), from ``baseline`` (one row as
        predict takes rows; default: the training rows' mean). The attributions of a row add up to its
        ``outputs`` minus its ``baseline_outputs``, to within the integral's error (more ``steps``: closer)."""
        body: dict[str, Any] = {"inputs": [r.tolist() if hasattr(r, "tolist") else r for r in inputs]}
        for key, value in (("target", target), ("baseline", baseline), ("steps", steps), ("version", version)):
            if value is not None:
                body[key] = value.tolist() if hasattr(value, "tolist") else value
        return cast(Explanation, self._json("POST", f"/v1/models/{model_id}/explain", json=body))

    def export(
        self,
        model_id: str,
        format: str = "npz",
        *,
        version: int | None = None,
        to: str | os.PathLike[str] | None = None,
    ) -> bytes:
        """The trained version as a file (``npz``, ``keras`` or ``onnx``); written to ``to`` when given."""
        params: dict[str, Any] = {"format": format}
        if version is not None:
            params["version"] = version
        content = self._request("GET", f"/v1/models/{model_id}/export", params=params).content
        if to is not None:
            Path(to).write_bytes(content)
        return content
