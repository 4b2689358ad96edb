# D-Bus on the socket itself, little-endian, the few types the tests' raw clients use; put before
# each of them (`dbus_descriptors.py`, `dbus_held_calls.py`) by `bus.rs`.
import os
import socket
import struct


class Body:
    """D-Bus marshalling of the few types used here."""

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


def string_body(text):
    body = Body()
    body.string(text)
    return body.data


def method_call(serial, path, iface, member, dest, body_sig, body, flags=0, fds=0):
    """A METHOD_CALL message; `fds`: how many Unix descriptors go with it (UNIX_FDS field)."""
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
    if fds:
        fields.align(8)
        fields.data += bytes([9])
        fields.signature("u")
        fields.uint32(fds)
    head = struct.pack("<cBBBIII", b"l", 1, flags, 1, len(body), serial, len(fields.data))
    message = Body()
    message.data = head + fields.data
    message.align(8)
    return message.data + body


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


def connect(bus_path, unix_fds=False):
    """A connection to the bus at `bus_path`, authenticated as this process's uid, with `Hello`
    sent (its reply is the first message read)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(bus_path)
    conn.sendall(b"\0AUTH EXTERNAL " + str(os.getuid()).encode().hex().encode() + b"\r\n")
    assert conn.recv(4096).startswith(b"OK "), "the bus refused authentication"
    if unix_fds:
        conn.sendall(b"NEGOTIATE_UNIX_FD\r\n")
        assert conn.recv(4096).startswith(b"AGREE_UNIX_FD"), "the bus refused to pass descriptors"
    conn.sendall(b"BEGIN\r\n")
    conn.sendall(
        method_call(1, "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello",
                    "org.freedesktop.DBus", None, b"")
    )
    return conn
