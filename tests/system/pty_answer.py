"""Run a command on a new pseudo-terminal and answer its password prompt.

usage: pty_answer.py PASSWORD COMMAND [ARG...]; exits with the command's status and copies what
the terminal showed to stdout. The password is read from argv here only because this runs inside
a throw-away test container, never by the product.

The agent prints its prompt before it switches echo off with TCSAFLUSH, which discards input
typed in between. So the answer waits a second after the prompt (and, on a terminal whose echo
this script can see, for echo to be off; behind `su --pty` the terminal seen here is su's own raw
one, so only the wait counts). If three seconds after an answer the terminal showed nothing new
but that answer's echo, the answer was lost and is sent again (at most three answers in all).
After 90 s the command is killed.
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
shown_at_answer = 0
status = None


def answer():
    global answers, answered_at, shown_at_answer
    os.write(fd, password.encode() + b"\n")
    answers, answered_at, shown_at_answer = answers + 1, time.time(), len(shown)


def answer_lost():
    # Nothing shown since the answer but, perhaps, its own echo: the agent flushed it unread.
    return shown[shown_at_answer:].replace(password.encode(), b"").strip() == b""


deadline = time.time() + 90
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.25)
    if fd in ready:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        shown += data
    now = time.time()
    if answers == 0 and PROMPT.search(shown):
        prompt_seen_at = prompt_seen_at or now
        waited = now - prompt_seen_at
        if (waited > 1 and not echo_is_on()) or waited > 5:
            answer()
    elif 0 < answers < 3 and now - answered_at > 3 and answer_lost():
        answer()
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
