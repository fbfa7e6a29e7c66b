"""`masksynth watch`: the camera-drop workflow, safe against being killed at any moment.

A camera (or its FTP server) drops files into INBOX. A file is taken once it is complete:
not hidden, not named like an upload in progress (.part, .tmp, .filepart, ...), and its
size and modification time unchanged for `settle` seconds. Each file is classified, then:

1. its result (the file row, every face row, where the file will go) is committed to
   OUT/results.sqlite in one transaction, with the state `moving`;
2. the file is moved to OUT/processed/ (or OUT/failed/, with the reason in the database);
3. the row's state becomes `done`.

Killed between any two steps and restarted, the watcher first finishes what the database
says was decided (moves the file if it is still in INBOX, then marks it done), so a file is
never classified twice and never lost; killed before step 1, the file is still in INBOX
with no trace and is classified from scratch. SQLite's journal keeps the database
consistent under kill -9. OUT/results.csv (one row per face, or per file without faces) is
the database's export: after every file its rows are appended (not the whole file
rewritten, so a long-running watcher stays fast), and the database keeps the CSV's length
after each append, so a tail a kill cut short is cut off and written again on restart.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import io
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from masksynth.deploy.predict import csv_fields, safe_records
from masksynth.deploy.predictor import FacePredictor
from masksynth.deploy.sources import Item, frames
from masksynth.errors import MasksynthError
from masksynth.fileio import atomic_open, numbered

log = logging.getLogger(__name__)
TAIL_BYTES = 4096  # how much of the CSV's end the database vouches for
UPLOAD_SUFFIXES = (".part", ".tmp", ".filepart", ".partial", ".crdownload", ".download", ".!ut")
SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,           -- path inside INBOX
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    status TEXT NOT NULL,         -- ok | no_face | failed
    reason TEXT NOT NULL,
    faces INTEGER NOT NULL,
    destination TEXT NOT NULL,    -- relative to OUT
    state TEXT NOT NULL,          -- moving | done
    processed_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS faces (
    file_id INTEGER NOT NULL REFERENCES files(id),
    frame INTEGER,
    time_s REAL,
    face INTEGER NOT NULL,
    x REAL, y REAL, w REAL, h REAL,
    face_score REAL,
    probability REAL NOT NULL,    -- P(positive class), calibrated
    probabilities TEXT NOT NULL,  -- every class's probability, JSON
    label TEXT NOT NULL,
    confidence REAL NOT NULL,
    uncertain INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS files_state ON files(state);
-- how far results.csv is complete: every file up to last_file_id, in its first `bytes`,
-- whose last (up to) 4 KiB hash to `tail` (a CSV edited or rewritten since does not match)
CREATE TABLE IF NOT EXISTS csv_export (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    last_file_id INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    tail TEXT NOT NULL
);
"""


def connect(database: Path) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(database, isolation_level=None)  # explicit transactions
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")  # a commit survives power loss
        connection.executescript(SCHEMA)
    except sqlite3.Error as error:
        raise MasksynthError(
            f"{database}: cannot use it as the results database ({error})"
        ) from None
    return connection


def is_complete(path: Path, seen: dict[Path, tuple[int, int, float]], settle: float) -> bool:
    """True once `path` has kept its size and mtime for `settle` seconds (`seen` remembers)."""
    try:
        info = path.stat()
    except OSError:
        return False
    now = time.monotonic()
    signature = (info.st_size, info.st_mtime_ns)
    if path not in seen or seen[path][:2] != signature:
        seen[path] = (*signature, now)
        return settle <= 0
    return now - seen[path][2] >= settle


def arrivals(inbox: Path) -> Iterator[Path]:
    """Regular files in INBOX (recursively, in name order) that are not uploads in progress."""
    for dirpath, dirnames, filenames in os.walk(inbox):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.lower().endswith(UPLOAD_SUFFIXES):
                continue
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


class Watcher:
    def __init__(
        self, predictor: FacePredictor, inbox: Path, out: Path, settle: float = 2.0, every: int = 1
    ) -> None:
        if not inbox.is_dir():
            raise MasksynthError(f"{inbox}: no such folder to watch")
        if every < 1 or settle < 0:
            raise MasksynthError("--every must be >= 1 and --settle >= 0")
        self.predictor, self.inbox, self.out = predictor, inbox.resolve(), out.resolve()
        nested = self.out == self.inbox or {self.inbox, self.out} & {
            *self.out.parents,
            *self.inbox.parents,
        }
        if nested:
            raise MasksynthError("--out and the watched folder must not lie one inside the other")
        self.settle, self.every = settle, every
        try:
            for folder in ("processed", "failed"):
                (self.out / folder).mkdir(parents=True, exist_ok=True)
            self.lock = open(self.out / ".watch.lock", "w")  # noqa: SIM115 - held while running
        except OSError as error:
            raise MasksynthError(f"{self.out}: cannot write there ({error.strerror})") from None
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise MasksynthError(
                f"another masksynth watch is writing to {self.out}: one watcher per folder"
            ) from None
        self.db = connect(self.out / "results.sqlite")
        self.seen: dict[Path, tuple[int, int, float]] = {}

    def recover(self) -> int:
        """Finish every decision a killed run committed but did not carry out: move the very
        file it classified (same sha256) if it is still in INBOX, or drop that copy if the
        move had already been made; a different file of that name is a new arrival."""
        pending = self.db.execute(
            "SELECT id, name, sha256, destination FROM files WHERE state = 'moving'"
        ).fetchall()
        for file_id, name, sha256, destination in pending:
            source, target = self.inbox / name, self.out / destination
            moved = target.is_file() and _sha256(target) == sha256
            if source.is_file() and _sha256(source) == sha256:
                if moved:
                    source.unlink()  # killed between the copy and the delete of a move
                else:
                    _move_file(source, target)
                moved = True
            if moved:
                self.db.execute("UPDATE files SET state = 'done' WHERE id = ?", (file_id,))
            else:  # taken away (or replaced by another file of that name) before the move
                self.db.execute(
                    "UPDATE files SET state = 'done', destination = '', reason = ? WHERE id = ?",
                    ("left the inbox before it could be moved", file_id),
                )
        for partial in self.out.rglob(".*.moving"):  # copies a kill cut short
            partial.unlink()
        for partial in self.out.glob(".results.csv.*.tmp"):  # a CSV rewrite a kill cut short
            partial.unlink()
        if pending:
            log.info("finished %d file(s) a previous run had classified", len(pending))
        self.sync_csv()
        return len(pending)

    def poll(self) -> tuple[int, int]:
        """Process every complete file in INBOX once: (files processed, files still
        arriving)."""
        done = waiting = 0
        for path in list(arrivals(self.inbox)):
            if is_complete(path, self.seen, self.settle):
                if self.process(path):
                    self.seen.pop(path, None)
                    done += 1
            else:
                waiting += 1
        return done, waiting

    def process(self, path: Path) -> bool:
        """Classify, record and move one complete file; False if it cannot be read yet."""
        name = path.relative_to(self.inbox).as_posix()
        try:
            sha256, size = _sha256(path), path.stat().st_size
        except OSError as error:  # e.g. no permission yet: try again at the next poll
            log.warning("%s: cannot read it yet (%s)", name, error.strerror or error)
            return False
        records = [
            record
            for frame in frames(Item(name, path), self.predictor.meta["prepare"], every=self.every)
            for record in safe_records(self.predictor, frame)
        ]
        errors = [r for r in records if r["status"] == "error"]
        faces = [r for r in records if r["status"] == "ok"]
        if errors:  # a video cut short keeps the faces it had, and is not filed as fine
            status, reason = "failed", errors[0]["reason"]
        else:
            status, reason = ("ok", "") if faces else ("no_face", "no face found")
        folder = "failed" if status == "failed" else "processed"
        target = numbered(self.out / folder / name)
        file_id = _record_result(
            self.db,
            (
                name,
                sha256,
                size,
                status,
                reason,
                len(faces),
                target.relative_to(self.out).as_posix(),
                datetime.now(timezone.utc).isoformat(timespec="seconds"),
            ),
            faces,
            self.predictor.probability_keys,
            self.predictor.positive,
        )
        _move_file(path, target)
        self.db.execute("UPDATE files SET state = 'done' WHERE id = ?", (file_id,))
        self.sync_csv()
        log.info(
            "%s: %s%s",
            name,
            status,
            f" ({reason})" if reason and status == "failed" else f", {len(faces)} face(s)",
        )
        return True

    def sync_csv(self) -> None:
        """Append to OUT/results.csv the rows of every file finished since the last append.

        A CSV longer than the database says (a kill between the append and its record) loses
        the unrecorded tail, which is appended again; a CSV that is missing, shorter, or not
        the one recorded (another header after a model with other classes, an edit) is
        written anew from the database."""
        path = self.out / "results.csv"
        header = _csv_text([self._csv_fields()])
        recorded = self.db.execute("SELECT last_file_id, bytes, tail FROM csv_export").fetchone()
        last, length, tail = recorded or (0, 0, "")
        try:
            with open(path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                intact = handle.read(len(header)) == header and size >= length
                if intact and length:
                    handle.seek(max(0, length - TAIL_BYTES))
                    intact = _tail_hash(handle.read(min(length, TAIL_BYTES))) == tail
        except OSError:
            size, intact = -1, False
        if not intact:
            last, length = 0, 0
        rows = self.db.execute(
            "SELECT f.id, f.name, f.sha256, f.status, f.reason, f.destination, p.frame, "
            "p.time_s, p.face, p.x, p.y, p.w, p.h, p.face_score, p.probabilities, p.label, "
            "p.confidence, p.uncertain FROM files f LEFT JOIN faces p ON p.file_id = f.id "
            "WHERE f.id > ? AND f.state = 'done' ORDER BY f.id, p.rowid",
            (last,),
        ).fetchall()
        if length and size == length and not rows:
            return
        keys = self.predictor.probability_keys
        lines = []
        for row in rows:
            probabilities = json.loads(row[14]) if row[14] else {}
            lines.append([*row[1:14], *(probabilities.get(k) for k in keys), *row[15:]])
        text = _csv_text(lines)
        if length == 0:
            # forget the old record first: killed after the rewrite, a restart rewrites again
            self.db.execute("DELETE FROM csv_export")
            content = header + text
            with atomic_open(path, "wb") as handle:
                handle.write(content)
        else:
            with open(path, "r+b") as handle:
                handle.truncate(length)
                handle.seek(max(0, length - TAIL_BYTES))
                content = handle.read() + text  # the bytes the new tail hash covers
                handle.seek(length)
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
        total = (length or len(header)) + len(text)
        self.db.execute(
            "INSERT OR REPLACE INTO csv_export VALUES (1, ?, ?, ?)",
            (max([last, *(row[0] for row in rows)]), total, _tail_hash(content[-TAIL_BYTES:])),
        )

    def _csv_fields(self) -> list[str]:
        keys = self.predictor.probability_keys
        return ["file", "sha256", "status", "reason", "destination"] + [
            f for f in csv_fields(keys) if f not in ("source", "status", "reason")
        ]

    def run(self, poll_seconds: float = 1.0, once: bool = False) -> dict:
        """Watch until interrupted (or, with `once`, until no file is left arriving)."""
        if poll_seconds < 0:
            raise MasksynthError("--poll must be >= 0")
        self.recover()
        processed, interrupted = 0, False
        try:
            while True:
                done, waiting = self.poll()
                processed += done
                if once and not waiting:
                    break
                time.sleep(poll_seconds)
        except KeyboardInterrupt:
            interrupted = True  # every finished file is recorded and moved
        finally:
            self.db.close()
            self.lock.close()
        return {"processed": processed, "interrupted": interrupted}


def _record_result(
    db: sqlite3.Connection,
    row: tuple,
    faces: list[dict],
    probability_keys: list[str],
    positive: int,
) -> int:
    """One transaction: the file's row (state 'moving') and all its faces."""
    with closing(db.cursor()) as cursor:
        cursor.execute("BEGIN IMMEDIATE")
        try:
            cursor.execute(
                "INSERT INTO files (name, sha256, bytes, status, reason, faces, destination, "
                "state, processed_utc) VALUES (?, ?, ?, ?, ?, ?, ?, 'moving', ?)",
                row,
            )
            file_id = cursor.lastrowid
            cursor.executemany(
                "INSERT INTO faces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        file_id,
                        f["frame"],
                        f["time_s"],
                        f["face"],
                        *f["box"],
                        f["face_score"],
                        f[probability_keys[positive]],
                        json.dumps({k: f[k] for k in probability_keys}),
                        f["label"],
                        f["confidence"],
                        int(f["uncertain"]),
                    )
                    for f in faces
                ],
            )
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
    return file_id


def _tail_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _csv_text(rows: list[list]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _move_file(source: Path, target: Path) -> None:
    """Rename within a file system; across file systems copy (fsynced), then delete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:
        partial = target.with_name(f".{target.name}.moving")
        shutil.copyfile(source, partial)
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, target)
        source.unlink()
