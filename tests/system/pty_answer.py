"""Run a command on a new pseudo-terminal and answer its password prompt once.

usage: pty_answer.py PASSWORD COMMAND [ARG...]; exits with the command's status and copies what
the terminal showed to stdout. The password is read from argv here only because this runs inside
a throw-away test container, never by the product.
"""
import os
import pty
import re
import select
import sys
import time

password, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)

shown = b""
answered = False
status = None
deadline = time.time() + 60
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.5)
    if fd in ready:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        shown += data
        if not answered and re.search(rb"[Pp]assword[^:\n]*:\s*$", shown):
            os.write(fd, password.encode() + b"\n")
            answered = True
    else:
        done, raw = os.waitpid(pid, os.WNOHANG)
        if done:
            status = raw
            break
sys.stdout.write(shown.decode(errors="replace"))
if status is None:
    _, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
