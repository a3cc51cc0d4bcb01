"""Exports of trained model versions: ``export_model(model_bytes, fmt) -> (content, media_type, suffix)``.

``model_bytes`` is a stored version (``engine.Model.to_bytes()``); ``fmt`` is one of

* ``"npz"``: the version's own bytes, unchanged: an uncompressed NumPy archive with no pickled
  objects (``w_0 … w_{k-1}`` in get_weights() order, ``std_mean``/``std_std`` when standardized, and a
  ``header`` entry holding the JSON spec as a uint8 array; see engine/serialization.py). This is what
  the npz export of service/services/models.py already serves, and ``engine.from_bytes`` reads it back.
* ``"keras"``: a zip of a Keras 3 Sequential JSON config, the weights as .npz and a README
  (see keras_export.py).
* ``"onnx"``: an ONNX graph, opset 17, float32, standardization inside (see onnx_export.py; needs
  the ``onnx`` package).

``suffix`` completes a file name: ``f"model-{model_id}-v{version}{suffix}"``. An unknown format raises
ValueError naming it; undecodable model bytes raise ValueError too.
"""
from __future__ import annotations

FORMATS = ("npz", "keras", "onnx")

_MEDIA = {"npz": ("application/octet-stream", ".npz"),
          "keras": ("application/zip", "-keras.zip"),
          "onnx": ("application/octet-stream", ".onnx")}


def export_npz(model_bytes: bytes) -> bytes:
    """The stored bytes themselves (already a pickle-free npz), after checking that they load."""
    import engine

    engine.from_bytes(model_bytes)       # ValueError if not a backprop-model archive
    return bytes(model_bytes)


def export_model(model_bytes: bytes, fmt: str) -> tuple[bytes, str, str]:
    """(content, media type, file-name suffix) of ``model_bytes`` exported as ``fmt``."""
    key = fmt.strip().lower() if isinstance(fmt, str) else fmt
    if key not in _MEDIA:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if key == "npz":
        content = export_npz(model_bytes)
    elif key == "keras":
        from .keras_export import export_keras

        content = export_keras(model_bytes)
    else:
        from .onnx_export import export_onnx

        content = export_onnx(model_bytes)
    media_type, suffix = _MEDIA[key]
    return content, media_type, suffix


__all__ = ["export_model", "export_npz", "FORMATS"]
