"""`masksynth predict`: records for every face of every photo, video frame or camera frame.

One record per face; a frame without a face and a file that cannot be read get one record
each (status `no_face` / `error`, with the reason), so every input is accounted for. Records
stream to stdout as JSON lines, or to OUT/predictions.jsonl|csv, each frame's records
flushed as the frame is done: a camera's records can be read while it runs, and a run
stopped in any way (Ctrl-C, kill -9) keeps every finished frame.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

import cv2

from masksynth.deploy.annotate import draw
from masksynth.deploy.predictor import FacePredictor
from masksynth.deploy.sources import Frame, expand, frames
from masksynth.errors import MasksynthError
from masksynth.fileio import atomic_open, numbered

log = logging.getLogger(__name__)
FORMATS = ("jsonl", "csv")
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def csv_fields(probability_keys: list[str]) -> list[str]:
    return [
        "source",
        "frame",
        "time_s",
        "face",
        "status",
        "x",
        "y",
        "w",
        "h",
        "face_score",
        *probability_keys,
        "label",
        "confidence",
        "uncertain",
        "reason",
    ]


def frame_records(predictor: FacePredictor, frame: Frame) -> list[dict]:
    """The records of one frame: one per face, or one saying why there are none."""
    where = {"source": frame.source, "frame": frame.frame, "time_s": frame.time_s}
    if frame.rgb is None:
        return [{**where, "face": None, "status": "error", "reason": frame.error}]
    faces = predictor.predict(frame.rgb)
    if not faces:
        return [{**where, "face": None, "status": "no_face", "reason": "no face found"}]
    return [{**where, "face": i, "status": "ok", **face} for i, face in enumerate(faces)]


def safe_records(predictor: FacePredictor, frame: Frame) -> list[dict]:
    """`frame_records`, with a failure inside detection or classification turned into this
    frame's error record: one strange frame never ends a run over thousands."""
    try:
        return frame_records(predictor, frame)
    except (cv2.error, ValueError, RuntimeError, MemoryError) as error:
        where = {"source": frame.source, "frame": frame.frame, "time_s": frame.time_s}
        reason = f"could not be processed: {type(error).__name__}: {' '.join(str(error).split())}"
        return [{**where, "face": None, "status": "error", "reason": reason}]


class RecordSink:
    """JSON lines or CSV rows, to a stream or a file, flushed frame by frame."""

    def __init__(self, handle: IO, fmt: str, probability_keys: list[str]) -> None:
        self.handle, self.fmt = handle, fmt
        self.csv = None
        if fmt == "csv":
            self.csv = csv.DictWriter(
                handle, fieldnames=csv_fields(probability_keys), extrasaction="ignore"
            )
            self.csv.writeheader()

    def write(self, records: list[dict]) -> None:
        """One frame's records, flushed together."""
        for record in records:
            if self.csv is not None:
                box = record.get("box") or [None] * 4
                self.csv.writerow({**record, **dict(zip("xywh", box, strict=True))})
            else:
                self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()


@contextlib.contextmanager
def _sink(out_dir: Path | None, fmt: str, probability_keys: list[str]) -> Iterator[RecordSink]:
    if out_dir is None:
        yield RecordSink(sys.stdout, fmt, probability_keys)
        return
    kwargs = {"newline": ""} if fmt == "csv" else {}
    path = out_dir / f"predictions.{fmt}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # not atomic: a stream, readable while it grows (a camera never ends)
        handle = open(path, "w", encoding="utf-8", **kwargs)  # noqa: SIM115 - closed below
    except OSError as error:
        raise MasksynthError(f"{path}: cannot write there ({error.strerror})") from None
    with handle:
        yield RecordSink(handle, fmt, probability_keys)


class Annotator:
    """Annotated copies under OUT/annotated/: photos as images, each video as one .mp4, at
    the source's path (never outside the folder; a name already used gets -2, -3...)."""

    def __init__(self, folder: Path, predictor: FacePredictor, every: int) -> None:
        self.folder, self.predictor, self.every = folder, predictor, every
        self.videos: dict[str, tuple[cv2.VideoWriter | None, Path, Path]] = {}
        self.taken: set[Path] = set()

    def _target(self, source: str, suffix: str) -> Path:
        parts = [p for p in PurePosixPath(source).parts if p not in ("/", ".", "..")]
        candidate = numbered(
            self.folder.joinpath(*parts).with_suffix(suffix), self.taken.__contains__
        )
        self.taken.add(candidate)
        return candidate

    def add(self, frame: Frame, records: list[dict]) -> None:
        if frame.rgb is None:
            return
        faces = [r for r in records if r["status"] == "ok"]
        bgr = draw(frame.rgb, faces, self.predictor.classes[self.predictor.positive])
        if frame.frame is None:
            suffix = PurePosixPath(frame.source).suffix.lower()
            suffix = suffix if suffix in PHOTO_SUFFIXES else ".png"
            ok, data = cv2.imencode(suffix, bgr)
            if ok:
                with atomic_open(self._target(frame.source, suffix), "wb") as handle:
                    handle.write(data.tobytes())
            return
        if frame.source not in self.videos:
            final = self._target(frame.source, ".mp4")
            final.parent.mkdir(parents=True, exist_ok=True)
            partial = final.with_name(f".{final.name}.part.mp4")
            height, width = bgr.shape[:2]
            fps = (frame.fps or 25.0) / self.every  # every N-th frame: real-time playback
            writer = cv2.VideoWriter(
                str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
            )
            if not writer.isOpened():
                log.warning("%s: no annotated copy (OpenCV cannot write %s)", frame.source, final)
                writer = None
            self.videos[frame.source] = (writer, partial, final)
        writer = self.videos[frame.source][0]
        if writer is not None:
            writer.write(bgr)

    def close(self) -> None:
        for writer, partial, final in self.videos.values():
            if writer is None:
                continue
            writer.release()
            if partial.exists():
                partial.replace(final)
        self.videos.clear()


def predict(
    predictor: FacePredictor,
    inputs: list[str],
    out_dir: Path | None = None,
    fmt: str = "jsonl",
    annotate: bool = False,
    every: int = 1,
    max_frames: int = 0,
) -> dict:
    """Run `predictor` over `inputs`; returns a summary (counts, labels, frames per second)."""
    if fmt not in FORMATS:
        raise MasksynthError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    if every < 1 or max_frames < 0:
        raise MasksynthError("--every must be >= 1 and --max-frames >= 0")
    if annotate and out_dir is None:
        raise MasksynthError("--annotate needs --out DIR for the annotated copies")
    items = expand(inputs)
    counts: Counter = Counter()
    labels: Counter = Counter()
    annotator = Annotator(out_dir / "annotated", predictor, every) if annotate and out_dir else None
    started = time.perf_counter()
    interrupted = False
    settings = predictor.meta["prepare"]
    with _sink(out_dir, fmt, predictor.probability_keys) as sink:
        try:
            for item in items:
                for frame in frames(item, settings, every, max_frames):
                    records = safe_records(predictor, frame)
                    sink.write(records)
                    status = records[0]["status"]
                    counts["frames"] += 1
                    counts[status if status != "ok" else "frames_with_faces"] += 1
                    counts["faces"] += sum(r["status"] == "ok" for r in records)
                    labels.update(r["label"] for r in records if r["status"] == "ok")
                    counts["uncertain"] += sum(bool(r.get("uncertain")) for r in records)
                    if status == "error":
                        log.warning("skipped %s: %s", frame.source, records[0]["reason"])
                    if annotator is not None:
                        try:
                            annotator.add(frame, records)
                        except (OSError, cv2.error) as error:
                            log.warning("%s: no annotated copy (%s)", frame.source, error)
        except KeyboardInterrupt:
            interrupted = True  # keep everything done so far
        finally:
            if annotator is not None:
                annotator.close()
    seconds = time.perf_counter() - started
    return {
        "inputs": len(items),
        "frames": counts["frames"],
        "frames_with_faces": counts["frames_with_faces"],
        "no_face": counts["no_face"],
        "errors": counts["error"],
        "faces": counts["faces"],
        "labels": dict(labels),
        "uncertain": counts["uncertain"],
        "uncertain_band": predictor.decision.uncertain_band,
        "threshold": predictor.decision.threshold,
        "seconds": round(seconds, 2),
        "frames_per_s": round(counts["frames"] / seconds, 2) if seconds > 0 else None,
        "interrupted": interrupted,
    }
