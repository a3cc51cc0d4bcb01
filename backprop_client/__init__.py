"""The Python client of Backprop: ``Client(base_url, api_key)``.

It depends on httpx and the standard library only, so it installs anywhere without the service.
"""
from __future__ import annotations

from backprop_client.client import ApiError, Client, parse_sse
from backprop_client.types import (
    Checkpoint,
    Dataset,
    Evaluation,
    Event,
    HistoryRow,
    Job,
    Model,
    ModelSummary,
    Page,
    Prediction,
    Progress,
    StatusData,
    Sweep,
    SweepTrial,
    Version,
)

__all__ = [
    "ApiError",
    "Checkpoint",
    "Client",
    "Dataset",
    "Evaluation",
    "Event",
    "HistoryRow",
    "Job",
    "Model",
    "ModelSummary",
    "Page",
    "Prediction",
    "Progress",
    "StatusData",
    "Sweep",
    "SweepTrial",
    "Version",
    "parse_sse",
]
