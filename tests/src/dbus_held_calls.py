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
import socket
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


class Body:
    """D-Bus marshalling, little-endian, of the few types used here."""

    def __init__(self):
        self.data = b""

    def align(self, n):
        self.data += b"\0" * ((-len(self.data)) % n)

    def uint32(self, value):
        self.align(4)
        self.data += struct.pack("<I", value)

    def uint64(self, value):
        self.align(8)
        self.data += struct.pack("<Q", value)

    def string(self, text):
        raw = text.encode()
        self.uint32(len(raw))
        self.data += raw + b"\0"

    def signature(self, text):
        raw = text.encode()
        self.data += bytes([len(raw)]) + raw + b"\0"


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


def method_call(serial, path, iface, member, dest, body_sig, body, flags):
    fields = Body()
    for code, kind, value in ((1, "o", path), (2, "s", iface), (3, "s", member), (6, "s", dest)):
        fields.align(8)
        fields.data += bytes([code])
        fields.signature(kind)
        fields.string(value)
    if body_sig:
        fields.align(8)
        fields.data += bytes([8])
        fields.signature("g")
        fields.signature(body_sig)
    head = struct.pack("<cBBBIII", b"l", 1, flags, 1, len(body), serial, len(fields.data))
    message = Body()
    message.data = head + fields.data
    message.align(8)
    return message.data + body


def string_body(text):
    body = Body()
    body.string(text)
    return body.data


def messages(conn):
    """(kind, header fields by code, body) of each message read, until the connection ends."""
    data = b""
    while True:
        while len(data) >= 16:
            body_len, _, fields_len = struct.unpack_from("<III", data, 4)
            start = 16
            end = start + fields_len + ((-fields_len) % 8) + body_len
            if len(data) < end:
                break
            kind, raw = data[1], data[start : start + fields_len]
            fields, at = {}, 0
            while at < len(raw):
                at += (-at) % 8
                code, sig_len = raw[at], raw[at + 1]
                sig = raw[at + 2 : at + 2 + sig_len].decode()
                at += 3 + sig_len
                if sig in ("s", "o"):
                    at += (-at) % 4
                    (length,) = struct.unpack_from("<I", raw, at)
                    fields[code] = raw[at + 4 : at + 4 + length].decode()
                    at += 5 + length
                elif sig == "g":
                    length = raw[at]
                    fields[code] = raw[at + 1 : at + 1 + length].decode()
                    at += 2 + length
                else:
                    at += (-at) % 4
                    (fields[code],) = struct.unpack_from("<I", raw, at)
                    at += 4
            yield kind, fields, data[end - body_len : end]
            data = data[end:]
        try:
            chunk = conn.recv(65536)
        except (ConnectionResetError, TimeoutError, socket.timeout):
            chunk = b""
        if not chunk:
            return
        data += chunk


def first_string(fields, body):
    if fields.get(8, "").startswith("s") and len(body) >= 4:
        (length,) = struct.unpack_from("<I", body, 0)
        return body[4 : 4 + length].decode(errors="replace")
    return ""


conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(bus_path)
conn.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
assert conn.recv(4096).startswith(b"OK "), "the bus refused authentication"
conn.sendall(b"BEGIN\r\n")
conn.sendall(
    method_call(1, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
                "org.freedesktop.DBus", None, b"", 0)
)
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
