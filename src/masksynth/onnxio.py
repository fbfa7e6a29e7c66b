"""A torch network as an onnxruntime session: the deployed classifier and Inception on CPUs.

onnxruntime runs these convolutional networks 1.3-2.3x faster than eager torch on the
project's 2-core CPUs (benchmarks/deploy_speed.py, benchmarks/inception_speed.py) with the
same outputs within 1e-5. Export uses torch's TorchScript exporter: a plain CNN needs
nothing of the dynamo exporter, which would add onnxscript and minutes of tracing.
"""

from __future__ import annotations

import importlib.util
import io
import warnings

import torch

from masksynth.errors import MasksynthError

OPSET = 18
EXTRA = 'pip install -e ".[onnx]"'  # the optional extra that brings onnx and onnxruntime


def available(*packages: str) -> bool:
    """True when these packages of the optional extra are installed (default: both, which
    export and sessions need)."""
    names = packages or ("onnx", "onnxruntime")
    return all(importlib.util.find_spec(name) is not None for name in names)


def require(what: str, *packages: str) -> None:
    """A one-line error naming the extra when `what` needs it and it is missing."""
    if not available(*packages):
        raise MasksynthError(f"{what} needs the optional extra: {EXTRA}")


def export_bytes(
    module: torch.nn.Module | torch.jit.ScriptModule,
    example: torch.Tensor,
    input_name: str,
    output_name: str,
) -> bytes:
    """`module` as ONNX bytes, its batch dimension left free."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            module,
            (example,),
            buffer,
            dynamo=False,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
            opset_version=OPSET,
        )
    return buffer.getvalue()


def cpu_session(model: bytes, threads: int = 0):
    """An onnxruntime CPU session of `model` with `threads` intra-op threads (0: its own
    choice, one per core)."""
    import onnxruntime  # imported here: ~0.5 s, needed only where a session is made

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
