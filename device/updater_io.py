# mpfleet updater_io: what the updater and the installer share (the bootflags,
# HTTP, streaming a body to flash, renaming and removing files). An update
# takes up to three boots, each with only its own code on the heap
# (docs/board.md): the updater checks the manifest, the installer downloads
# and swaps, the updater reports. Both import this module; neither imports
# the other (except when the bootstrap runs them in one go).
#
# HTTP/1.1 with Content-Length or until the server closes (no chunked bodies:
# mpfleet serve, nginx and Home Assistant send Content-Length for files).
import json
import os

import machine

_TIMEOUT = const(10)

# What runs: (which, head, mpfleet.py's Watch or None), from the first stage;
# None on a board that runs nothing yet (the bootstrap).
now = None


def gen():
    # The generation that runs, or None.
    return now[1]["generation"] if now else None


def flags():
    # The bootflags (config.py says what they are).
    try:
        f = json.loads(machine.RTC().memory())
    except Exception:
        f = {}
    return f if isinstance(f, dict) else {}


def save(f, after=None):
    # Store the bootflags f; with after, the call the first stage makes on the
    # next boot ([module, function, arguments...]; it imports nothing else),
    # and reset into it.
    if after:
        f["next"] = after
    machine.RTC().memory(json.dumps(f))
    if after:
        machine.reset()


def alive():
    # Work is progressing: feed the watchdog and keep its timer feeding it 30 s
    # more (unless the app already said it is healthy: then it feeds for ever).
    import time

    w = now and now[2]
    if w:
        w.wdt.feed()
        if w.until is not None:
            w.until = time.ticks_add(time.ticks_ms(), 30000)


def settings():
    with open("/ota.json") as f:
        return json.load(f)


def request(method, url, timeout=None, send=None):
    # Returns (status, socket at the body, Content-Length or None); the caller
    # closes the socket. The timeout: /ota.json "timeout" seconds, 10 by default.
    # send(sock): writes the rest of the headers, the blank line and the body.
    import socket

    alive()
    timeout = timeout or settings().get("timeout", _TIMEOUT)
    _, _, hostport, path = url.split("/", 3)
    if not url.startswith("http://"):
        raise ValueError("not http://: " + url)
    host, port = (hostport.split(":") + ["80"])[:2]
    addr = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)[0][-1]
    sock = socket.socket()
    try:
        sock.settimeout(timeout)
        sock.connect(addr)
        sock.write("%s /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, path, hostport))
        if send:
            send(sock)
        else:
            sock.write("\r\n")
        status = int(sock.readline().split(None, 2)[1])
        length = None
        while True:
            line = sock.readline().lower()
            if line in (b"", b"\r\n"):
                return status, sock, length
            if line.startswith(b"content-length:"):
                length = int(line[15:])
            elif line.startswith(b"transfer-encoding:"):
                raise OSError("chunked body")
    except:  # noqa: E722 -- close on any error, then re-raise
        sock.close()
        raise


def get(url, path, h, size, sealed=False, wrap=None):
    # Stream url's body into path, feeding hash h; raise unless it is `size`
    # bytes. sealed: at most `size` bytes, after a first line, the envelope
    # {"hmac":"<64 hex>"}, which is not written and is returned. wrap(sock):
    # the stream to read instead (an inflater); `size` is then what it gives.
    status, sock, length = request("GET", url)
    seal = None
    got = 0
    buf = memoryview(bytearray(128))  # here, not at import: the heap is tidier now
    try:
        if status != 200:
            raise (ValueError if status < 500 else OSError)("HTTP %d for %s" % (status, url))
        if sealed:
            seal = sock.readline(76)
            got = len(seal)
            if not (got == 76 and seal.startswith(b'{"hmac":"') and seal.endswith(b'"}\n')):
                raise ValueError("manifest is not signed: refused")
        src = sock
        if wrap:
            src = wrap(sock)
            length = size
        with open(path, "wb") as f:
            while length is None or got < length:
                n = src.readinto(buf, 128 if length is None else min(128, length - got))
                if not n:
                    if length is not None:
                        raise OSError("connection closed mid-body")
                    break
                got += n
                if got > size:
                    break
                h.update(buf[:n])
                f.write(buf[:n])
                alive()
    finally:
        sock.close()
    if got > size or not sealed and got != size:
        raise ValueError("%s: %d bytes, not %d" % (url, got, size))
    return seal


def replace(src, dst):
    try:
        os.rename(src, dst)
    except OSError:  # FAT will not rename over an existing file
        os.remove(dst)
        os.rename(src, dst)


def remove(path):
    try:
        os.remove(path)
    except OSError:
        pass
