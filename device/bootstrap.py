# mpfleet bootstrap: run once on a fresh board, after your boot.py connects Wi-Fi:
#   mpremote run bootstrap.py      (or copy it over and `import bootstrap`)
# It writes /ota.json, fetches the `updater` the server names for this board
# into /ota/tmp (checked by size and SHA-256), and hands over to it: it
# installs the first stage (/ota/mpfleet.mpy, /ota/mpfleet_boot.mpy, and last
# the /main.py that imports them) and the rest of the manifest, every file
# checked, then resets into your app. Running it again is safe: it updates the board
# from what it runs.
#
# Needs MicroPython 1.22 or newer: before 1.22 an ESP32 clears RTC memory at
# every reset (the boot flags could not count a boot loop) and an ESP8266
# watchdog takes no timeout.
SERVER = "http://mpfleet.local:8080/"  # your mpfleet server; ends with "/"
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


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:  # exists
        pass


def bootstrap():
    if sys.implementation.version[:2] < (1, 22):
        print("mpfleet: needs MicroPython 1.22 or newer; this board runs %d.%d.%d."
              % sys.implementation.version[:3])
        print("Flash a newer firmware (https://micropython.org/download/), then run bootstrap.py again.")
        return
    server = SERVER if SERVER.endswith("/") else SERVER + "/"
    for d in ("/ota", "/ota/tmp", "/ota/m"):
        _mkdir(d)
    try:
        with open("/ota.json") as f:
            settings = json.load(f)
    except (OSError, ValueError):
        settings = {}
    settings["server"] = server
    settings.setdefault("interval", INTERVAL)
    settings["watchdog"] = WATCHDOG
    settings["timeout"] = TIMEOUT
    with open("/ota/tmp/ota.json", "w") as f:
        json.dump(settings, f)
    try:
        os.rename("/ota/tmp/ota.json", "/ota.json")
    except OSError:  # FAT will not rename over an existing file
        os.remove("/ota.json")
        os.rename("/ota/tmp/ota.json", "/ota.json")

    mac = binascii.hexlify(network.WLAN(network.STA_IF).config("mac")).decode()
    print("mpfleet: board", mac, "server", server)
    try:
        sock, length = _get("%sv1/%s.json" % (server, mac))
    except OSError as e:
        if "HTTP 404" not in str(e):
            raise
        # The server saw us (`mpfleet device list --unknown`): say what to do.
        print("mpfleet: this board is not assigned on the server yet: run")
        print("  mpfleet device set %s --app YOUR_APP" % mac)
        print("then run bootstrap.py again")
        return
    # The manifest has one module per line: keep only the updater's.
    try:
        sock.readline()
        while True:
            line = sock.readline()
            if not line.startswith(b'"'):
                raise ValueError("the manifest names no updater")
            if line.startswith(b'"updater"'):
                m = json.loads(b"{" + line.strip().rstrip(b",") + b"}")["updater"]
                break
    finally:
        sock.close()
    mpy = m.get("mpy")
    if isinstance(mpy, dict) and mpy.get("version") == getattr(sys.implementation, "_mpy", -1) & 0xFF:
        m = mpy  # precompiled bytecode this port loads
    print("mpfleet: fetching", m["url"])
    fetched = "/ota/tmp/updater" + (".mpy" if m["url"].endswith(".mpy") else ".py")
    _save(server + m["url"], fetched, m["size"], m["sha256"])
    sys.path.insert(0, "/ota/tmp")
    import updater

    # From here on the updater's own code: the first stage, then the rest.
    try:
        updater.running()  # run again on a working board: update from what it runs
    except (OSError, ValueError):
        pass  # a new board (or one from an older mpfleet): install everything
    updater.manifest(server)
    boot = {}
    for name, m in updater._lines("/ota/tmp/manifest.json", "boot"):
        boot[name] = updater.entry(name, m)
    for name in ("mpfleet_boot", "mpfleet"):  # the first stage
        e = boot[name]
        ext = e[1][e[1].rfind(".") :]
        updater.install(server, e, "/ota/" + name + ext)
        updater.remove("/ota/%s.%s" % (name, "py" if ext == ".mpy" else "mpy"))
    stub = boot["main"]
    updater.remove("/ota/tmp/manifest.json")

    def main_py():  # last: a board with /main.py has everything it needs
        updater.remove(fetched)  # loaded: its file can go
        updater.install(server, stub, "/main.py")

    updater.run(updater._run, done=main_py)
    if updater._gen() is None:
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
