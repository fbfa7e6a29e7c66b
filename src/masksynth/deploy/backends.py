"""Where a face's class probabilities are computed: torch (the checkpoint) or onnxruntime.

The ONNX model is self-contained: it takes (N, 3, S, S) float pixels in [0, 255] and returns
calibrated class probabilities (the normalisation, the fitted temperature and the softmax
are in the graph), and it carries the checkpoint's metadata (classes, crop settings,
temperature, the checkpoint's sha256) as a JSON metadata entry, so `predict model.onnx`
needs nothing else. onnxruntime is an optional extra: `pip install -e ".[onnx]"`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from masksynth.classify.checkpoint import load_classifier, predict_proba
from masksynth.errors import MasksynthError
from masksynth.fileio import atomic_open, file_sha256
from masksynth.onnxio import cpu_session, export_bytes, require

BACKENDS = ("torch", "onnxruntime")
META_KEY = "masksynth"
# metadata kept in the ONNX file: what prediction needs and where the model came from
META_KEYS = ("class_names", "positive_class", "size", "mean", "std", "temperature", "prepare")


class Calibrated(nn.Module):
    """Pixels in [0, 255] -> calibrated probabilities: the whole of `predict_proba` in one graph."""

    def __init__(self, model: nn.Module, meta: dict) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(meta["mean"]).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(meta["std"]).view(1, -1, 1, 1) * 255.0)
        self.temperature = float(meta.get("temperature", 1.0))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.model((pixels - self.mean) / self.std)
        return torch.softmax(logits / self.temperature, dim=1)


def onnx_bytes(checkpoint: str | Path) -> tuple[bytes, dict]:
    """The checkpoint as a self-contained ONNX model (bytes) and the metadata it carries."""
    require("ONNX export")
    import onnx  # imported here: ~1 s, needed only to write the metadata

    model, meta = load_classifier(checkpoint, torch.device("cpu"))
    wrapped = Calibrated(model, meta).eval()
    size = int(meta["size"])
    example = torch.rand(2, 3, size, size) * 255.0
    data = export_bytes(wrapped, example, "pixels", "probabilities")
    proto = onnx.load_from_string(data)
    carried = {
        **{k: meta[k] for k in META_KEYS if k in meta},
        "checkpoint_sha256": file_sha256(checkpoint),
        "arch": meta["arch"],
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(carried)
    return proto.SerializeToString(), carried


def export_onnx(checkpoint: str | Path, path: str | Path) -> dict:
    data, meta = onnx_bytes(checkpoint)
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return meta


class TorchBackend:
    name = "torch"

    def __init__(self, checkpoint: Path, device: torch.device) -> None:
        self.device = device
        self.model, self.meta = load_classifier(checkpoint, device)
        self.meta["checkpoint_sha256"] = file_sha256(checkpoint)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return predict_proba(
                self.model, torch.from_numpy(crops), self.meta, self.device
            ).numpy()


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, source: Path, threads: int = 0) -> None:
        require("--backend onnxruntime", "onnxruntime")  # a .onnx file needs no exporter
        if source.suffix.lower() == ".onnx":
            data = source.read_bytes()
            meta = None
        else:
            data, meta = onnx_bytes(source)
        try:
            self.session = cpu_session(data, threads)
        except Exception as error:  # noqa: BLE001 - any load failure is a bad model file
            raise MasksynthError(f"{source} is not a usable ONNX model: {error}") from None
        if meta is None:
            found = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
            if not found:
                raise MasksynthError(f"{source} is not a masksynth ONNX model (no metadata)")
            meta = json.loads(found)
        self.meta = meta

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"pixels": crops.astype(np.float32)})[0]


def load_backend(source: str | Path, backend: str, device: torch.device, threads: int = 0):
    """A .onnx file always runs on onnxruntime; a checkpoint on the backend asked for."""
    source = Path(source)
    if backend not in BACKENDS:
        raise MasksynthError(f"--backend must be one of {', '.join(BACKENDS)} (got {backend!r})")
    if not source.is_file():
        raise MasksynthError(f"{source}: no such model file")
    if backend == "onnxruntime" or source.suffix.lower() == ".onnx":
        return OnnxBackend(source, threads)
    return TorchBackend(source, device)
