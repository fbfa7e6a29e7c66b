"""Run every benchmark in its own process, with its peak memory, into one results.json.

Each benchmark script runs as a child process (sized so that all of them take about 7
minutes on 2 CPU cores); its JSON line(s) are read from stdout and given the child's wall
time and peak RSS (os.wait4's ru_maxrss: the largest single process of the child's tree,
DataLoader and pool workers included but not summed). Results are written after each
benchmark, atomically, so a crash keeps what finished. Prints a markdown table and checks
the speed targets; a missed target is reported, a crashed benchmark fails the exit code.

    python benchmarks/run_all.py                    # everything, ~7 min on 2 cores
    python benchmarks/run_all.py --only gan classifier_64

Benchmarks (--only): gan, classifier_64, classifier_128, classifier_effnet_128, prepare_1k,
prepare_all, prepare_copy, sample, evaluate, inception.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = [  # (name prefix, name suffix, minimum ratio over the plain loop)
    ("gan_train_", "", 2.5),
    ("classifier_train_", "_64", 2.0),
]


def jobs(args) -> dict[str, list[str]]:
    """Each benchmark's script and arguments, sized for the whole run to stay under 10 min."""
    data, prep = f"--data={args.data}", f"--prep={args.prep}"
    dev = f"--device={args.device}"
    run = [f"--run={args.gan_run}"] if (args.gan_run / "checkpoint.pt").is_file() else []
    common = [data, prep, dev]
    classifier = ["classifier_speed.py", *common]
    return {
        "gan": ["gan_speed.py", *common, "--steps=3", "--repeats=3"],
        "classifier_64": [*classifier, "--size=64", "--steps=4", "--repeats=3"],
        "classifier_128": [*classifier, "--size=128", "--steps=2", "--repeats=1"],
        # train-classifier's default network and size
        "classifier_effnet_128": [
            *classifier,
            "--arch=efficientnet_lite0",
            "--size=128",
            "--steps=2",
            "--repeats=1",
        ],
        "prepare_1k": ["prepare_speed.py", data, "--sets=1k"],
        "prepare_all": ["prepare_speed.py", data, "--sets=all"],
        "prepare_copy": ["prepare_speed.py", data, "--sets=copy"],
        "sample": ["sample_speed.py", prep, dev, *run, "--n-per-class=500", "--repeats=2"],
        "evaluate": ["evaluate_speed.py", *common, "--per-class=300"],
        "inception": ["inception_speed.py", "--images=96", "--repeats=3"],
    }


def _stop_group(pid: int) -> None:
    """Ctrl-C first, so the benchmark removes its temporary folders; then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGINT)
        time.sleep(10)
        os.killpg(pid, signal.SIGKILL)


def run_child(argv: list[str], limit_s: float) -> tuple[int, list[dict], float, float, str]:
    """(exit code, JSON records, wall seconds, peak RSS MB, stderr tail) of one benchmark."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        # its own session, so that a timeout stops the child and its workers together
        child = subprocess.Popen(
            [sys.executable, str(HERE / argv[0]), *argv[1:]],
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        timer = threading.Timer(limit_s, _stop_group, (child.pid,))
        timer.daemon = True
        timer.start()
        # wait4, not child.wait(): it also gives the child's resource use (ru_maxrss in KiB)
        _, status, usage = os.wait4(child.pid, 0)
        timer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        lines = out.read().decode().splitlines()
        tail = err.read().decode(errors="replace")[-2000:]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return child.returncode, records, seconds, usage.ru_maxrss / 1024, tail


def write_atomic(path: Path, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)


def _cell(value) -> str:
    return "-" if value is None else str(value)


def table(results: list[dict]) -> str:
    rows = [
        "| name | value | unit | baseline | ratio | compute-only ceiling | peak MB |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        ceiling = "-"
        if r.get("compute_only") is not None:
            ceiling = f"{r['compute_only']} ({r['ceiling_ratio']}x)"
        cells = [r["name"], r["value"], r["unit"], r.get("baseline"), r.get("ratio"), ceiling]
        rows.append("| " + " | ".join(_cell(c) for c in [*cells, r["peak_rss_mb"]]) + " |")
    return "\n".join(rows)


def check_targets(results: list[dict]) -> list[str]:
    lines = []
    for r in results:
        for prefix, suffix, minimum in TARGETS:
            if r["name"].startswith(prefix) and r["name"].endswith(suffix):
                verdict = "met" if (r.get("ratio") or 0) >= minimum else "NOT met"
                lines.append(f"{r['name']}: ratio {r['ratio']} (target >= {minimum}): {verdict}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/face-mask"))
    parser.add_argument("--prep", type=Path, default=Path("runs/prep"))
    parser.add_argument(
        "--gan-run",
        type=Path,
        default=Path("runs/exp-audit/gan"),
        help="a GAN run to sample from; if it has no checkpoint, one is trained",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="benchmarks (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--limit", type=float, default=600, help="seconds per benchmark")
    args = parser.parse_args()
    planned = jobs(args)
    unknown = set(args.only or ()) - set(planned)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}: choose from {list(planned)}")
    if not (args.prep / "prepare.json").is_file():
        # classifier_128 needs the 128 px cache too
        from masksynth.config import PrepareConfig
        from masksynth.data.prepare import prepare

        print(f"preparing {args.data} into {args.prep} (once)", flush=True)
        prepare(args.data, args.prep, PrepareConfig(sizes=(64, 128)))

    started, results, crashed = time.perf_counter(), [], []
    for key, argv in planned.items():
        if args.only and key not in args.only:
            continue
        print(f"{key}: {' '.join(argv)}", flush=True)
        code, records, seconds, peak_mb, tail = run_child(argv, args.limit)
        if code != 0 or not records:
            crashed.append(key)
            why = "stopped at --limit" if seconds >= args.limit else f"exit code {code}"
            print(f"{key} FAILED ({why}) after {seconds:.0f} s:\n{tail}", flush=True)
            continue
        for record in records:
            results.append({**record, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb)})
        print(f"{key}: {seconds:.0f} s, peak {peak_mb:.0f} MB", flush=True)
        write_atomic(args.out, results)
    total = time.perf_counter() - started
    write_atomic(args.out, results)
    print()
    print(table(results))
    print(f"\ntotal wall time: {total:.0f} s ({total / 60:.1f} min); results in {args.out}")
    for line in check_targets(results):
        print(line)
    if crashed:
        print(f"crashed: {', '.join(crashed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
