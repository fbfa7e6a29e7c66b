"""What `predict` reads: photos, folders (recursively), video files and cameras, as frames.

Photos are decoded by content exactly as `prepare` decodes training photos (EXIF rotation,
colour profile, alpha, size limits). A file that cannot be used becomes one error frame
with the reason, and the run goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from masksynth.data.decode import RejectedImage, decode_image
from masksynth.errors import MasksynthError

# Read as video by OpenCV; any other file is decoded as an image by its content.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
)


@dataclass(frozen=True)
class Item:
    """One thing to read: a file (`name` is how it is reported and annotated) or a camera."""

    name: str
    path: Path | None = None
    camera: int | None = None

    @property
    def is_video(self) -> bool:
        return self.camera is not None or (
            self.path is not None and self.path.suffix.lower() in VIDEO_EXTENSIONS
        )


@dataclass(frozen=True)
class Frame:
    source: str
    rgb: np.ndarray | None  # (H, W, 3) uint8; None with an error
    frame: int | None = None  # video and camera frames only
    time_s: float | None = None
    error: str = ""
    fps: float = 0.0  # the frame rate a video declares (0: none, or a photo)


def expand(inputs: list[str]) -> list[Item]:
    """Files as given, folders walked recursively in name order (hidden entries skipped), an
    integer that is not a path as a camera index. A missing path is a user error."""
    items: list[Item] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(f for f in filenames if not f.startswith(".")):
                    file = Path(dirpath) / name
                    items.append(Item(file.relative_to(path.parent).as_posix(), file))
        elif path.exists():
            items.append(Item(path.name if path.is_absolute() else path.as_posix(), path))
        elif text.isdigit():
            items.append(Item(f"camera{text}", camera=int(text)))
        else:
            raise MasksynthError(f"{text}: no such file or folder (a camera is given by index)")
    return items


def decode_as_trained(data: bytes, name: str, settings: dict) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file's bytes, decoded with the prepare settings the
    model's training photos were decoded with (a checkpoint's `prepare`); RejectedImage
    with the reason otherwise."""
    return decode_image(
        data,
        name,
        min_side=settings["min_side"],
        max_pixels=settings["max_pixels"],
        alpha_background=tuple(settings["alpha_background"]),
    ).rgb


def frames(
    item: Item,
    decode_settings: dict,
    every: int = 1,
    max_frames: int = 0,
) -> Iterator[Frame]:
    """The frames of one item: one for a photo; every `every`-th of a video or camera, at
    most `max_frames` of them (0: all; a camera runs until interrupted)."""
    if item.is_video:
        yield from _video_frames(item, every, max_frames)
        return
    assert item.path is not None
    try:
        data = item.path.read_bytes()
    except OSError as error:
        yield Frame(item.name, None, error=f"unreadable: {error.strerror or error}")
        return
    try:
        rgb = decode_as_trained(data, item.path.name, decode_settings)
    except RejectedImage as error:
        yield Frame(item.name, None, error=str(error))
        return
    yield Frame(item.name, rgb)


def _video_frames(item: Item, every: int, max_frames: int) -> Iterator[Frame]:
    capture = cv2.VideoCapture(item.camera if item.camera is not None else str(item.path))
    try:
        if not capture.isOpened():
            what = "camera cannot be opened" if item.camera is not None else "not a readable video"
            yield Frame(item.name, None, error=what)
            return
        fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
        declared = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if item.camera is None else 0
        started = time.monotonic()
        index = taken = 0
        while not max_frames or taken < max_frames:
            ok, bgr = capture.read()
            if not ok:
                break
            if index % every == 0:
                if item.camera is not None:  # a live camera: the time it was read
                    time_s = round(time.monotonic() - started, 3)
                else:
                    time_s = round(index / fps, 3) if fps > 0 else None
                yield Frame(
                    item.name, np.ascontiguousarray(bgr[:, :, ::-1]), index, time_s, fps=fps
                )
                taken += 1
            index += 1
        else:
            return  # --max-frames reached
        if index == 0:
            yield Frame(item.name, None, error="no frame could be decoded")
        elif declared and index < 0.95 * declared - 1:  # containers round their counts
            yield Frame(
                item.name,
                None,
                index,
                error=f"the video ends early: frame {index} of the {declared} it declares "
                "(truncated or still being written)",
            )
    finally:
        capture.release()
