"""Entry point for ``python -m blood_automl``."""

import os
import signal
import sys
from types import FrameType


def _stopped_while_starting(signum: int, frame: FrameType | None) -> None:
    """SIGINT or SIGTERM before any command ran: one line, exit 130 (nothing was done yet)."""
    name = signal.Signals(signum).name
    sys.stderr.write(
        f"error: stopped by {name} while blood-automl was starting; nothing was done\n"
    )
    sys.stderr.flush()
    os._exit(130)


if __name__ == "__main__":
    # Importing the CLI takes a moment (more on a first run, while Python compiles it): a
    # stop in that moment is one line, not a silent death or a traceback. The command's own
    # handlers (or Python's defaults) take over once it is imported.
    previous = {
        s: signal.signal(s, _stopped_while_starting) for s in (signal.SIGINT, signal.SIGTERM)
    }
    from blood_automl.cli import main

    for sig, handler in previous.items():
        signal.signal(sig, handler)
    main()
