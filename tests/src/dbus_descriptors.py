# A D-Bus client written on the socket, as an attacker could: method calls whose body is one
# string (as the helper's SetPassphrase takes) with Unix file descriptors attached to each, which
# no D-Bus library lets a caller do. Prints each kind of reply with its count, one per line:
# "error NAME COUNT", "return COUNT", or the calls left unanswered.
#
# argv: bus socket, destination, object path, interface, member, calls, descriptors per call
import array
import os
import socket
import struct
import sys
import threading

bus_path, dest, path, iface, member = sys.argv[1:6]
calls, per_call = int(sys.argv[6]), int(sys.argv[7])


def pad(data, n):
    return data + b"\0" * ((-len(data)) % n)


def string(text):
    raw = text.encode()
    return struct.pack("<I", len(raw)) + raw + b"\0"


def signature(text):
    raw = text.encode()
    return bytes([len(raw)]) + raw + b"\0"


def header_field(code, kind, value):
    out = bytes([code]) + signature(kind)
    if kind in "so":
        return pad(out, 4) + string(value)
    if kind == "g":
        return out + signature(value)
    return pad(out, 4) + struct.pack("<I", value)  # "u"


def method_call(serial, path, iface, member, dest, body_sig, body, fds):
    fields = [(1, "o", path), (2, "s", iface), (3, "s", member), (6, "s", dest)]
    if body_sig:
        fields.append((8, "g", body_sig))
    if fds:
        fields.append((9, "u", fds))
    array_bytes = b""
    for field in fields:
        array_bytes = pad(array_bytes, 8) + header_field(*field)
    head = struct.pack("<cBBBIII", b"l", 1, 0, 1, len(body), serial, len(array_bytes))
    return pad(head + array_bytes, 8) + body


def replies(conn, wanted):
    """Reply kinds to serials 2.. (ours), read until `wanted` have come."""
    seen, data = {}, b""
    while len(seen) < wanted:
        try:
            chunk = conn.recv(65536)
        except (ConnectionResetError, TimeoutError):
            chunk = b""
        if not chunk:
            break
        data += chunk
        while len(data) >= 16:
            body_len, _, fields_len = struct.unpack_from("<III", data, 4)
            start = 16
            end = start + fields_len + ((-fields_len) % 8) + body_len
            if len(data) < end:
                break
            kind, fields = data[1], data[start : start + fields_len]
            name, reply_to, at = None, None, 0
            while at < len(fields):
                at += (-at) % 8
                code, sig_len = fields[at], fields[at + 1]
                sig = fields[at + 2 : at + 2 + sig_len].decode()
                at += 3 + sig_len
                at += (-at) % 4
                if sig in ("s", "o"):
                    (length,) = struct.unpack_from("<I", fields, at)
                    value = fields[at + 4 : at + 4 + length].decode()
                    at += 5 + length
                elif sig == "g":
                    length = fields[at]
                    value = fields[at + 1 : at + 1 + length].decode()
                    at += 2 + length
                else:
                    (value,) = struct.unpack_from("<I", fields, at)
                    at += 4
                if code == 4:
                    name = value
                elif code == 5:
                    reply_to = value
            if kind in (2, 3) and reply_to is not None and reply_to >= 2:
                seen[reply_to] = "return" if kind == 2 else "error " + name
            data = data[end:]
    return seen


conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
conn.connect(bus_path)
conn.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
assert conn.recv(4096).startswith(b"OK "), "the bus refused authentication"
conn.sendall(b"NEGOTIATE_UNIX_FD\r\n")
assert conn.recv(4096).startswith(b"AGREE_UNIX_FD"), "the bus refused to pass descriptors"
conn.sendall(b"BEGIN\r\n")
# Neither sending nor reading waits for ever: 10 s without progress ends either.
conn.settimeout(10)
conn.sendall(
    method_call(1, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
                "org.freedesktop.DBus", None, b"", 0)
)

null = os.open("/dev/null", os.O_RDONLY)
fds = array.array("i", [os.dup(null) for _ in range(per_call)])
result = {}
reader = threading.Thread(target=lambda: result.update(replies(conn, calls)))
reader.start()
for serial in range(2, 2 + calls):
    message = method_call(serial, path, iface, member, dest, "s", string("descriptors"), per_call)
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)] if per_call else []
    try:
        conn.sendmsg([message], ancillary)
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        # The bus disconnects a client that keeps going over its limits, or stops reading it.
        break
reader.join(60)
counts = {}
for kind in result.values():
    counts[kind] = counts.get(kind, 0) + 1
if len(result) < calls:
    counts["unanswered (disconnected, or 10 s without progress)"] = calls - len(result)
for kind, count in sorted(counts.items()):
    print(kind, count)
