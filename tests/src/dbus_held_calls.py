# A D-Bus client written on the socket, as an ordinary user could: it may register a polkit
# authentication agent for its own process (a `unix-process` subject) that never answers, then
# sends method calls whose body is one string (as the helper's SetPassphrase takes), with the
# header flags given (0x4: ALLOW_INTERACTIVE_AUTHORIZATION), all on its one connection. polkitd
# then asks this agent (BeginAuthentication) about each interactive call and waits for it.
#
# Prints, one line each, flushed as they happen:
#   "agent registered" (or "agent refused NAME: TEXT", and exits 1)
#   "ready", then it waits for a line on standard input before sending the calls
#   "sent N" once the calls are written
#   "asked MEMBER" for each call polkitd (or anyone) makes to the agent, never answered
#   "reply SERIAL SECONDS return" or "reply SERIAL SECONDS error NAME: TEXT" as replies come,
#     SECONDS since the calls were sent
#   "unanswered N" if some are still unanswered after LIMIT seconds, then exits
#
# argv: bus socket, destination, object path, interface, member, calls, flags, agent (1 or 0),
# limit (seconds)
import os
import struct
import sys
import time

bus_path, dest, path, iface, member = sys.argv[1:6]
calls, flags, agent, limit = int(sys.argv[6]), int(sys.argv[7]), sys.argv[8] == "1", float(sys.argv[9])

AGENT_PATH = "/org/test/Agent"
POLKIT = "org.freedesktop.PolicyKit1"
AUTHORITY_PATH = "/org/freedesktop/PolicyKit1/Authority"
AUTHORITY = "org.freedesktop.PolicyKit1.Authority"


def say(line):
    print(line, flush=True)


def subject_body():
    """`(sa{sv})ss`: this process as a `unix-process` subject, the locale, the agent's path."""
    with open("/proc/self/stat") as stat:
        # Field 22, counted after the command's closing parenthesis (the command may hold spaces).
        start_time = int(stat.read().rsplit(")", 1)[1].split()[19])
    body = Body()
    body.align(8)
    body.string("unix-process")
    entries = Body()
    for key, kind, value in (("pid", "u", os.getpid()), ("start-time", "t", start_time)):
        # Offsets within `entries` match the body's: the array's first entry is 8-aligned there.
        entries.align(8)
        entries.string(key)
        entries.signature(kind)
        entries.uint32(value) if kind == "u" else entries.uint64(value)
    body.uint32(len(entries.data))
    body.align(8)
    body.data += entries.data
    body.string("C")
    body.string(AGENT_PATH)
    return body.data


def first_string(fields, body):
    if fields.get(8, "").startswith("s") and len(body) >= 4:
        (length,) = struct.unpack_from("<I", body, 0)
        return body[4 : 4 + length].decode(errors="replace")
    return ""


conn = connect(bus_path)
incoming = messages(conn)
conn.settimeout(limit)

if agent:
    conn.sendall(
        method_call(2, AUTHORITY_PATH, AUTHORITY, "RegisterAuthenticationAgent", POLKIT,
                    "(sa{sv})ss", subject_body(), 0)
    )
    for kind, fields, body in incoming:
        if kind in (2, 3) and fields.get(5) == 2:
            if kind == 3:
                say(f"agent refused {fields.get(4)}: {first_string(fields, body)}")
                sys.exit(1)
            say("agent registered")
            break

# Then wait for the word to send, so that the test may start several callers first and have
# them send one after another.
say("ready")
sys.stdin.readline()
first = 10
for serial in range(first, first + calls):
    conn.sendall(method_call(serial, path, iface, member, dest, "s", string_body("held"), flags))
sent = time.monotonic()
say(f"sent {calls}")

answered = set()
deadline = sent + limit
for kind, fields, body in incoming:
    if kind == 1:
        # Asked, never answered.
        say(f"asked {fields.get(3)}")
    elif kind in (2, 3) and fields.get(5, 0) >= first and fields[5] not in answered:
        answered.add(fields[5])
        after = time.monotonic() - sent
        if kind == 2:
            say(f"reply {fields[5]} {after:.3f} return")
        else:
            say(f"reply {fields[5]} {after:.3f} error {fields.get(4)}: {first_string(fields, body)}")
        if len(answered) == calls:
            break
    left = deadline - time.monotonic()
    if left <= 0:
        break
    conn.settimeout(left)
if len(answered) < calls:
    say(f"unanswered {calls - len(answered)}")
