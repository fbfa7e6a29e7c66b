"""Run the masksynth CLI and send this process a signal right after the N-th call of a function.

    python interrupt.py PACKAGE.MODULE:FUNCTION N SIGNAL CLI-ARGS...

Interruption tests use it so that the interruption lands at the same point of the work on
any machine, however fast (a test that sleeps and then signals races the CPU).
"""

import importlib
import os
import signal
import sys

from masksynth.cli import main


def signal_after(target: str, calls: int, signum: int) -> None:
    module_name, name = target.split(":")
    module = importlib.import_module(module_name)
    real, count = getattr(module, name), 0

    def counted(*args, **kwargs):
        nonlocal count
        result = real(*args, **kwargs)
        count += 1
        if count == calls:
            os.kill(os.getpid(), signum)  # SIGINT raises KeyboardInterrupt right here
        return result

    setattr(module, name, counted)


if __name__ == "__main__":
    target, calls, signame, *cli_args = sys.argv[1:]
    signal_after(target, int(calls), getattr(signal, signame))
    sys.exit(main(cli_args))
