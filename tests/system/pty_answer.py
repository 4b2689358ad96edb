"""Run a command on a new pseudo-terminal and answer its password prompt.

usage: pty_answer.py PASSWORD COMMAND [ARG...]; exits with the command's status and copies what
the terminal showed to stdout. The password is read from argv here only because this runs inside
a throw-away test container, never by the product.

The agent prints its prompt before it switches echo off with TCSAFLUSH, which discards input
typed in between: the answer waits until the terminal's echo is off (at most 5 s), and if the
prompt is still the last thing shown two seconds after an answer, it is sent again (at most three
times). After 90 s the command is killed.
"""
import os
import pty
import re
import select
import signal
import sys
import termios
import time

password, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(argv[0], argv)

PROMPT = re.compile(rb"[Pp]assword[^:\n]*:\s*$")


def echo_is_on():
    # On Linux the master side reports the terminal's (slave's) settings.
    try:
        return bool(termios.tcgetattr(fd)[3] & termios.ECHO)
    except termios.error:
        return False


shown = b""
prompt_seen_at = None
answers = 0
answered_at = None
status = None
deadline = time.time() + 90
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.25)
    if fd in ready:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if data:
            shown += data
            answered_at = None if answers == 0 else answered_at
    if answers == 0 and PROMPT.search(shown):
        prompt_seen_at = prompt_seen_at or time.time()
        if not echo_is_on() or time.time() - prompt_seen_at > 5:
            os.write(fd, password.encode() + b"\n")
            answers, answered_at = 1, time.time()
            continue
    if answers and answered_at and PROMPT.search(shown) and time.time() - answered_at > 2 and answers < 3:
        os.write(fd, password.encode() + b"\n")
        answers, answered_at = answers + 1, time.time()
    done, raw = os.waitpid(pid, os.WNOHANG)
    if done:
        status = raw
        break
if status is None:
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    shown += b"\n[pty_answer: killed after 90 s]\n"
try:
    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if fd not in ready:
            break
        data = os.read(fd, 4096)
        if not data:
            break
        shown += data
except OSError:
    pass
sys.stdout.write(shown.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
