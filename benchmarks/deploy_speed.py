"""Speed of the deployed classifier: `predict` on photos and on a video, and `serve`.

For each backend (torch, onnxruntime):
- predict_photos: photos/s and faces/s of masksynth's predict on --photos dev photos,
  against the plain loop people write (cv2.imread, YuNet, each face cropped with cv2.resize
  and classified on its own: no content-based decoding, no batching);
- predict_video: frames/s on a 640x480 video with one face (target >= 25), the same plain
  loop as baseline;
- serve_c1 / serve_c8: p50/p99 latency and throughput of POST /predict with a 640x480 photo
  on loopback at concurrency 1 and 8 (at most --requests requests or --seconds each; target
  p99 <= 100 ms at concurrency 1; failed requests are counted and must be 0).
Prints one JSON line per benchmark; medians over --repeats.

    python benchmarks/deploy_speed.py --checkpoint runs/clf/classifier.pt
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch
from common import result
from PIL import Image

from masksynth.classify.checkpoint import load_classifier, predict_proba
from masksynth.data.faces import FaceDetector, square_around
from masksynth.deploy.predict import predict
from masksynth.deploy.predictor import FacePredictor


def plain_loop(checkpoint: Path, paths: list[Path] | None, video: Path | None) -> tuple[int, int]:
    """The tutorial predict loop; returns (frames, faces)."""
    model, meta = load_classifier(checkpoint, torch.device("cpu"))
    detector = FaceDetector(meta["prepare"]["face_threshold"])
    size, margin = meta["size"], meta["prepare"]["face_margin"]
    frames = faces = 0

    def one(bgr: np.ndarray) -> int:
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        found = 0
        for face in detector.detect(rgb):
            x0, y0, side = square_around(face.box, rgb.shape[1], rgb.shape[0], margin)
            crop = cv2.resize(rgb[y0 : y0 + side, x0 : x0 + side], (size, size))
            x = torch.from_numpy(crop).permute(2, 0, 1)[None]
            with torch.inference_mode():
                predict_proba(model, x, meta, torch.device("cpu"))
            found += 1
        return found

    if video is not None:
        capture = cv2.VideoCapture(str(video))
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            faces += one(bgr)
            frames += 1
        capture.release()
    for path in paths or []:
        bgr = cv2.imread(str(path))
        if bgr is not None:
            faces += one(bgr)
            frames += 1
    return frames, faces


def timed(function, *args) -> tuple[float, object]:
    started = time.perf_counter()
    value = function(*args)
    return time.perf_counter() - started, value


def make_video(photo: Path, path: Path, frames: int) -> Path:
    canvas = Image.new("RGB", (640, 480), (120, 120, 120))
    image = Image.open(photo).convert("RGB")
    image.thumbnail((400, 440))
    canvas.paste(image, ((640 - image.width) // 2, (480 - image.height) // 2))
    bgr = np.asarray(canvas)[:, :, ::-1].copy()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
    for i in range(frames):
        writer.write(np.roll(bgr, i % 20, axis=1))
    writer.release()
    return path


def photo_640(photo: Path, path: Path) -> bytes:
    canvas = Image.new("RGB", (640, 480), (120, 120, 120))
    image = Image.open(photo).convert("RGB")
    image.thumbnail((400, 440))
    canvas.paste(image, ((640 - image.width) // 2, (480 - image.height) // 2))
    canvas.save(path, quality=90)
    return path.read_bytes()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: bytes) -> tuple[bool, float]:
    started = time.perf_counter()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "image/jpeg"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            ok = answer.status == 200 and json.loads(answer.read())["n_faces"] == 1
    except (urllib.error.URLError, OSError, ValueError):
        ok = False
    return ok, time.perf_counter() - started


def serve_load(checkpoint: Path, backend: str, body: bytes, args) -> list[dict]:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-m", "masksynth.cli", "serve", str(checkpoint), "--port", str(port)]
        + ["--backend", backend, "--max-concurrency", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        for _ in range(3):  # warm-up
            post(url + "/predict", body)
        records = []
        for concurrency in (1, 8):
            latencies, failed = [], 0
            started = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as pool:
                pending = []
                for _ in range(args.requests):
                    if time.perf_counter() - started > args.seconds:
                        break
                    pending.append(pool.submit(post, url + "/predict", body))
                    if len(pending) >= concurrency * 2:
                        ok, seconds = pending.pop(0).result()
                        failed += not ok
                        latencies.append(seconds)
                for future in pending:
                    ok, seconds = future.result()
                    failed += not ok
                    latencies.append(seconds)
            wall = time.perf_counter() - started
            ms = sorted(1000 * s for s in latencies)
            records.append(
                {
                    "name": f"serve_c{concurrency}_{backend}",
                    "requests": len(ms),
                    "failed": failed,
                    "p50_ms": round(statistics.median(ms), 1),
                    "p99_ms": round(float(np.percentile(ms, 99)), 1),
                    "throughput_per_s": round(len(ms) / wall, 1),
                    "target": "p99 <= 100 ms" if concurrency == 1 else None,
                }
            )
        return records
    finally:
        child.terminate()
        child.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/face-mask"))
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnxruntime"])
    args = parser.parse_args()
    photos = sorted(args.data.glob("*/*.jpg"))[:: max(1, 3000 // args.photos)][: args.photos]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "photos").mkdir()
        for i, photo in enumerate(photos):
            (scratch / "photos" / f"{i:04d}.jpg").symlink_to(photo.resolve())
        video = make_video(photos[0], scratch / "clip.mp4", args.frames)
        body = photo_640(photos[0], scratch / "frame.jpg")
        plain_photos = [
            timed(plain_loop, args.checkpoint, photos, None) for _ in range(args.repeats)
        ]
        plain_video = [timed(plain_loop, args.checkpoint, None, video) for _ in range(args.repeats)]
        for backend in args.backends:
            predictor = FacePredictor(args.checkpoint, "cpu", backend=backend)
            ours_photos = [
                timed(predict, predictor, [str(scratch / "photos")], scratch / "out")
                for _ in range(args.repeats)
            ]
            faces = ours_photos[0][1]["faces"]
            print(
                json.dumps(
                    result(
                        f"predict_photos_{backend}",
                        "photos/s",
                        [len(photos) / s for s, _ in ours_photos],
                        [len(photos) / s for s, _ in plain_photos],
                        faces_per_s=round(faces / statistics.median(s for s, _ in ours_photos), 1),
                        faces=faces,
                        photos=len(photos),
                    )
                )
            )
            ours_video = [
                timed(predict, predictor, [str(video)], scratch / "out")
                for _ in range(args.repeats)
            ]
            print(
                json.dumps(
                    result(
                        f"predict_video_{backend}",
                        "frames/s",
                        [args.frames / s for s, _ in ours_video],
                        [args.frames / s for s, _ in plain_video],
                        target=">= 25 frames/s (640x480, one face)",
                    )
                )
            )
            for record in serve_load(args.checkpoint, backend, body, args):
                print(json.dumps(record))


if __name__ == "__main__":
    main()
