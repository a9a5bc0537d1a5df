"""`python -m tests.exec_limited [LIMITS] -- COMMAND...`: sets the limits a test asks for, then becomes COMMAND.

The safe stand-in for subprocess's `preexec_fn`: that runs Python in a child forked from a test run with threads
(a hub server's, an output reader's, ONNX Runtime's pool), and the child can deadlock before it execs, on a lock a
thread that no longer exists held at the fork; a whole CI run once hung there. This runs in a process of its own."""

from __future__ import annotations

import argparse
import os
import resource
import signal


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.exec_limited")
    parser.add_argument("--open-files", type=int, help="RLIMIT_NOFILE, soft and hard")
    parser.add_argument("--file-size", type=int, help="RLIMIT_FSIZE in bytes; a write past it fails (EFBIG)")
    parser.add_argument("--close-stdout", action="store_true", help="start COMMAND with descriptor 1 closed")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.open_files is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.open_files, args.open_files))
    if args.file_size is not None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # ignored survives exec: the write fails instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.file_size, args.file_size))
    if args.close_stdout:
        os.close(1)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
