"""``coca-video`` (the console script) and ``python -m coca_video``: the CLI of :mod:`coca_video.cli`, with a Ctrl-C
while it loads ending as one later would: one line and exit status 130, never a traceback. This module imports
nothing before that guard, so the window left unguarded is the interpreter's own start."""

import sys

from .errors import INTERRUPTED  # a module of constants and exception classes: it imports nothing


def main() -> int:
    """Load the CLI and run it on ``sys.argv``; a KeyboardInterrupt during the load is one line, exit 130."""
    try:
        from .cli import main as cli_main
    except KeyboardInterrupt:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("coca-video: interrupted", file=sys.stderr)
        return INTERRUPTED
    return cli_main(exiting=True)


if __name__ == "__main__":
    sys.exit(main())
