"""``python -m harness.cli.peak PEAKFILE ARGS...``: ``harness ARGS...``, then the process'
peak resident memory (``VmHWM``, KiB) written to PEAKFILE, also on an error exit.

``harness bench paper-smoke`` runs each of its commands through this, so that a command's
memory is its own (``ru_maxrss`` of a child also counts the pages of the parent it was
forked from before ``exec``).
"""

import atexit
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    def write_peak() -> None:
        hwm = next((ln.split()[1] for ln in Path("/proc/self/status").read_text().splitlines()
                    if ln.startswith("VmHWM:")), "")
        Path(argv[0]).write_text(hwm)

    atexit.register(write_peak)
    from harness.cli import main as harness_main

    return harness_main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
