"""A resumable store of processed files, so reruns and interrupted runs redo no decoding.

Items live in numbered chunk files under `work/<key>/`, where the key fingerprints every
option that changes a file's processing. A file is reused when its path, size and
modification time match (`prepare` also reuses a file whose bytes match the stored sha256);
anything else is processed again. Chunks are written atomically
as they fill, so an interrupted `prepare` loses at most one chunk of work.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from masksynth.fileio import atomic_open


class ItemStore:
    def __init__(self, root: Path, key: str, sizes: tuple[int, ...], chunk_size: int = 256):
        self.folder = root / key
        self.sizes = sizes
        self.chunk_size = chunk_size
        self._pending: list[tuple[dict, dict[int, np.ndarray] | None]] = []
        self._next_chunk = 0
        for stale in root.glob("*") if root.is_dir() else []:
            if stale != self.folder and stale.is_dir():
                shutil.rmtree(stale)  # made with other options: never valid again

    def load(self) -> dict[tuple[str, int, int], tuple[dict, dict[int, np.ndarray] | None]]:
        """Everything stored so far, keyed by (relpath, size, mtime_ns)."""
        items = {}
        chunks = sorted(self.folder.glob("chunk-*.npz")) if self.folder.is_dir() else []
        for path in chunks:
            try:
                with np.load(path, allow_pickle=False) as data:
                    records = json.loads(str(data["records"]))
                    images = {size: data[f"img{size}"] for size in self.sizes}
            except Exception:  # noqa: BLE001 - a damaged chunk is just recomputed
                path.unlink(missing_ok=True)
                continue
            for record in records:
                row = record.pop("_row")
                arrays = None if row < 0 else {s: images[s][row] for s in self.sizes}
                key = (record["source"], record.pop("_size"), record.pop("_mtime"))
                items[key] = (record, arrays)
            self._next_chunk = max(self._next_chunk, int(path.stem.split("-")[1]) + 1)
        return items

    def add(self, record: dict, arrays: dict[int, np.ndarray] | None, size: int, mtime: int):
        self._pending.append(({**record, "_size": size, "_mtime": mtime}, arrays))
        if len(self._pending) >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        records, stacks = [], {s: [] for s in self.sizes}
        for record, arrays in self._pending:
            row = -1
            if arrays is not None:
                row = len(stacks[self.sizes[0]])
                for s in self.sizes:
                    stacks[s].append(arrays[s])
            records.append({**record, "_row": row})
        payload = {"records": np.array(json.dumps(records))}
        for s in self.sizes:
            payload[f"img{s}"] = (
                np.stack(stacks[s]) if stacks[s] else np.zeros((0, 3, s, s), np.uint8)
            )
        path = self.folder / f"chunk-{self._next_chunk:05d}.npz"
        with atomic_open(path, "wb") as handle:
            np.savez(handle, **payload)
        self._next_chunk += 1
        self._pending = []

    def rewrite(self, items: list[tuple[dict, dict[int, np.ndarray] | None, int, int]]) -> None:
        """Replace the store by exactly `items` (drops entries of deleted or changed files)."""
        old = sorted(self.folder.glob("chunk-*.npz"))
        self._next_chunk = max((int(p.stem.split("-")[1]) for p in old), default=-1) + 1
        self._pending = []
        for record, arrays, size, mtime in items:
            self.add(record, arrays, size, mtime)
        self.flush()
        for path in old:
            path.unlink(missing_ok=True)
