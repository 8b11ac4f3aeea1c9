# mpfleet bootstrap: run once on a fresh board, after your boot.py connects Wi-Fi.
# Each board has its own, with its key filled in (it is a secret: do not keep it):
#   mpfleet device bootstrap MAC --server http://HOST:8080/ > bootstrap.py
#   mpremote run bootstrap.py      (or copy it over and `import bootstrap`)
# It writes /ota.json (server, key, store), fetches this board's signed
# manifest, checks its HMAC under the key, fetches the updater it names
# (`updater`, `updater_trust`, `reporter`, `updater_io`, `installer`) into /ota/tmp (checked by size and
# SHA-256), and hands over to it: it
# installs the first stage (/ota/mpfleet.mpy, /ota/mpfleet_boot.mpy, and last
# the /main.py that imports them) and the rest of the manifest, every file
# checked, then resets into your app. Running it again is safe: it updates the board
# from what it runs.
#
# Needs MicroPython 1.22 or newer: before 1.22 an ESP32 clears RTC memory at
# every reset (the boot flags could not count a boot loop) and an ESP8266
# watchdog takes no timeout.
SERVER = "http://mpfleet.local:8080/"  # your mpfleet server; ends with "/"
KEY = None  # this board's secret key (64 hex digits), from `mpfleet device bootstrap`
STORE = None  # the identity of the store the key belongs to
COUNTER = 0  # report counters up to this one were used already
SECRETS = None  # JSON text written to /secrets.json (`device bootstrap --secrets`)
INTERVAL = 3600  # seconds between update checks your application may use
WATCHDOG = 30  # seconds a boot may take before it says it is healthy (0: no watchdog)
TIMEOUT = 10  # seconds the updater waits for the server

import binascii
import hashlib
import json
import os
import socket
import sys

import machine
import network


def _get(url):
    # GET url (HTTP/1.0); return (socket at the body, Content-Length or None).
    _, _, hostport, path = url.split("/", 3)
    host, port = (hostport.split(":") + ["80"])[:2]
    addr = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)[0][-1]
    sock = socket.socket()
    try:
        sock.settimeout(10)
        sock.connect(addr)
        sock.write("GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, hostport))
        status = int(sock.readline().split(None, 2)[1])
        length = None
        while True:
            line = sock.readline().lower()
            if line in (b"", b"\r\n"):
                break
            if line.startswith(b"content-length:"):
                length = int(line[15:])
        if status != 200:
            raise OSError("HTTP %d for %s" % (status, url))
        return sock, length
    except:  # noqa: E722 -- close, then re-raise
        sock.close()
        raise


def _save(url, path, size, sha256):
    # Stream url to path; raise unless it has exactly size bytes and sha256.
    buf = memoryview(bytearray(512))
    h = hashlib.sha256()
    got = 0
    sock, _ = _get(url)
    try:
        with open(path, "wb") as f:
            while got <= size:
                n = sock.readinto(buf)
                if not n:
                    break
                got += n
                h.update(buf[:n])
                f.write(buf[:n])
    finally:
        sock.close()
    if got != size or binascii.hexlify(h.digest()).decode() != sha256:
        os.remove(path)
        raise OSError("%s: %d bytes or sha256 do not match the manifest" % (url, got))


def _hmac():
    # HMAC-SHA256 under KEY: (inner hash to feed, outer key pad). The updater
    # has its own, but the bootstrap checks the manifest that names the
    # updater before it may trust any updater.
    k = bytearray(binascii.unhexlify(KEY) + bytes(32))
    for i in range(64):
        k[i] ^= 0x36
    inner = hashlib.sha256(k)
    for i in range(64):
        k[i] ^= 0x6A  # 0x36 ^ 0x5C: the outer pad
    return inner, k


def _write(path, value):
    # JSON to path, atomically (a copy in /ota/tmp, then renamed).
    with open("/ota/tmp/new.json", "w") as f:
        json.dump(value, f)
    try:
        os.rename("/ota/tmp/new.json", path)
    except OSError:  # FAT will not rename over an existing file
        os.remove(path)
        os.rename("/ota/tmp/new.json", path)


def _read(path):
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError):
        value = None
    return value if isinstance(value, dict) else {}


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:  # exists
        pass


def _settings(server):
    # /ota.json (server, key, store...) and /ota/trust.json (report counters).
    for d in ("/ota", "/ota/tmp", "/ota/m"):
        _mkdir(d)
    settings = _read("/ota.json")
    trust = _read("/ota/trust.json")
    if settings.get("store") != STORE or settings.get("key") != KEY:
        trust = {}  # another store or key: its generations are not this one's
    trust["n"] = max(trust.get("n", 0), COUNTER)
    settings["server"] = server
    settings.setdefault("interval", INTERVAL)
    settings["watchdog"] = WATCHDOG
    settings["timeout"] = TIMEOUT
    settings["key"] = KEY
    settings["store"] = STORE
    _write("/ota/trust.json", trust)
    _write("/ota.json", settings)
    if SECRETS:  # the board's own: never served, never touched by an update
        _write("/secrets.json", json.loads(SECRETS))


def bootstrap():
    if sys.implementation.version[:2] < (1, 22):
        print("mpfleet: needs MicroPython 1.22 or newer; this board runs %d.%d.%d."
              % sys.implementation.version[:3])
        print("Flash a newer firmware (https://micropython.org/download/), then run bootstrap.py again.")
        return
    server = SERVER if SERVER.endswith("/") else SERVER + "/"
    mac = binascii.hexlify(network.WLAN(network.STA_IF).config("mac")).decode()
    keyed = KEY and len(KEY) == 64 and STORE
    if keyed:
        _settings(server)
    print("mpfleet: board", mac, "server", server)
    try:
        sock, length = _get("%sv1/%s.json" % (server, mac))
    except OSError as e:
        if "HTTP 404" not in str(e):
            raise
        # The server saw us (`mpfleet device list --unknown`): say what to do.
        print("mpfleet: this board is not assigned on the server yet: run")
        print("  mpfleet device set %s --app YOUR_APP" % mac)
        print("  mpfleet device bootstrap %s --server %s > bootstrap.py" % (mac, server))
        print("then run that bootstrap.py")
        return
    if not keyed:
        sock.close()
        print("mpfleet: this bootstrap has no key. Make this board's own on the server:")
        print("  mpfleet device bootstrap %s --server %s > bootstrap.py" % (mac, server))
        print("then run that bootstrap.py")
        return

    # The manifest is sealed: an HMAC line, then one file per line. Keep only
    # the updater's lines, and use them once the HMAC of every line checks.
    parts = {}
    try:
        seal = sock.readline(76)
        if not (seal.startswith(b'{"hmac":"') and seal.endswith(b'"}\n')):
            raise ValueError("the manifest is not signed: refused")
        h, k = _hmac()
        got = len(seal)
        while length is None or got < length:
            line = sock.readline(1024)
            if not line:
                break
            got += len(line)
            h.update(line)
            for name in (b'"updater"', b'"updater_trust"', b'"reporter"', b'"updater_io"', b'"installer"'):
                if line.startswith(name):
                    parts.update(json.loads(b"{" + line.strip().rstrip(b",") + b"}"))
    finally:
        sock.close()
    if binascii.hexlify(hashlib.sha256(k + h.digest()).digest()) != seal[9:73]:
        raise ValueError("the manifest is not signed with this board's key: refused")
    if len(parts) != 5:
        raise ValueError("the manifest names no updater (updater, updater_trust, reporter, updater_io, installer)")
    fetched = []
    for name, m in parts.items():
        mpy = m.get("mpy")
        if isinstance(mpy, dict) and mpy.get("version") == getattr(sys.implementation, "_mpy", -1) & 0xFF:
            m = mpy  # precompiled bytecode this port loads
        print("mpfleet: fetching", m["url"])
        fetched.append("/ota/tmp/" + name + (".mpy" if m["url"].endswith(".mpy") else ".py"))
        _save(server + m["url"], fetched[-1], m["size"], m["sha256"])
    parts = m = None
    sys.path.insert(0, "/ota/tmp")
    import installer
    import updater
    import updater_io

    # From here on the updater's own code: the first stage, then the rest.
    try:  # run again on a working board: update from what it runs
        with open("/ota/primary.json") as f:
            updater_io.now = ("primary", json.loads(f.readline() + "}}"), None)
    except (OSError, ValueError):
        pass  # a new board (or one from an older mpfleet): install everything
    updater.manifest(server)
    boot = {}
    for name, m in installer.lines("/ota/tmp/manifest.json", "boot"):
        boot[name] = installer.entry(name, m)
    for name in ("mpfleet_boot", "mpfleet"):  # the first stage
        e = boot[name]
        ext = e[1][e[1].rfind(".") :]
        installer.install(server, e, "/ota/" + name + ext)
        updater_io.remove("/ota/%s.%s" % (name, "py" if ext == ".mpy" else "mpy"))
    stub = boot["main"]
    updater_io.remove("/ota/tmp/manifest.json")

    def main_py():  # last: a board with /main.py has everything it needs
        for path in fetched:  # loaded: their files can go
            updater_io.remove(path)
        installer.install(server, stub, "/main.py")

    updater.run(updater_io.now, done=main_py)
    if updater_io.gen() is None:
        raise OSError("the update failed (above)")
    main_py()
    machine.reset()


def _main():
    try:
        bootstrap()
    except Exception as e:
        print("mpfleet: bootstrap failed: %s: %s" % (type(e).__name__, e))
        print("Fix the cause and run bootstrap.py again: it is safe to run twice.")

_main()
