# A D-Bus client written on the socket, as an attacker could: method calls whose body is one
# string (as the helper's SetPassphrase takes) with Unix file descriptors attached to each, which
# no D-Bus library lets a caller do. Prints each kind of reply with its count, one per line:
# "error NAME COUNT", "return COUNT", or the calls left unanswered.
#
# argv: bus socket, destination, object path, interface, member, calls, descriptors per call
import array
import os
import socket
import sys
import threading

bus_path, dest, path, iface, member = sys.argv[1:6]
calls, per_call = int(sys.argv[6]), int(sys.argv[7])


def replies(conn, wanted):
    """Reply kinds to serials 2.. (ours), read until `wanted` have come."""
    seen = {}
    if wanted == 0:
        return seen
    for kind, fields, _ in messages(conn):
        reply_to = fields.get(5)
        if kind in (2, 3) and reply_to is not None and reply_to >= 2:
            seen[reply_to] = "return" if kind == 2 else "error " + fields.get(4)
            if len(seen) >= wanted:
                break
    return seen


conn = connect(bus_path, unix_fds=True)
# Neither sending nor reading waits for ever: 10 s without progress ends either.
conn.settimeout(10)

null = os.open("/dev/null", os.O_RDONLY)
fds = array.array("i", [os.dup(null) for _ in range(per_call)])
result = {}
reader = threading.Thread(target=lambda: result.update(replies(conn, calls)))
reader.start()
for serial in range(2, 2 + calls):
    message = method_call(serial, path, iface, member, dest, "s", string_body("descriptors"),
                          fds=per_call)
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
