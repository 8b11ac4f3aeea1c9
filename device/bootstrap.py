# mpfleet bootstrap: run once on a fresh board, after your boot.py connects Wi-Fi:
#   mpremote run bootstrap.py      (or copy it over and `import bootstrap`)
# It writes /ota.json, installs the `config` and `updater` versions the server
# names for this board (checked by size and SHA-256), and /main.py, then
# resets. On that boot main.py finds no configuration yet and runs the updater,
# which installs the rest. Running it again is safe: it never touches
# /ota/primary.json or /ota/alternate.json, and it asks for an update check.
#
# Its HTTP client is the smallest that works (HTTP/1.0: no chunked bodies);
# the updater has the full one.
SERVER = "http://mpfleet.local:8080/"  # your mpfleet server; ends with "/"
INTERVAL = 3600  # seconds between update checks your application may use
WATCHDOG = 30  # seconds: a boot that hangs this long resets (0: no watchdog; see config.py)

import binascii
import hashlib
import json
import os
import socket
import sys

import machine
import network


def _get(url):
    # GET url; return the socket positioned at the body.
    _, _, hostport, path = url.split("/", 3)
    host, port = (hostport.split(":") + ["80"])[:2]
    addr = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)[0][-1]
    sock = socket.socket()
    try:
        sock.settimeout(10)
        sock.connect(addr)
        sock.write("GET /%s HTTP/1.0\r\nHost: %s\r\n\r\n" % (path, hostport))
        status = int(sock.readline().split(None, 2)[1])
        while sock.readline() not in (b"", b"\r\n"):
            pass
        if status != 200:
            raise OSError("HTTP %d for %s" % (status, url))
        return sock
    except:  # noqa: E722 -- close, then re-raise
        sock.close()
        raise


def _save(url, path, size=None, sha256=None):
    # Stream url to path through a temporary file; check size and sha256 if given.
    tmp = "/ota/tmp/bootstrap"
    buf = memoryview(bytearray(512))
    h = hashlib.sha256()
    got = 0
    sock = _get(url)
    try:
        with open(tmp, "wb") as f:
            while True:
                n = sock.readinto(buf)
                if not n:
                    break
                got += n
                h.update(buf[:n])
                f.write(buf[:n])
    finally:
        sock.close()
    if (size is not None and got != size) or got == 0:
        raise OSError("%s: got %d bytes, expected %s" % (url, got, size))
    if sha256 and binascii.hexlify(h.digest()).decode() != sha256:
        raise OSError("%s: sha256 mismatch" % url)
    try:
        os.rename(tmp, path)
    except OSError:  # FAT will not rename over an existing file
        os.remove(path)
        os.rename(tmp, path)


def _mkdir(path):
    try:
        os.mkdir(path)
    except OSError:  # exists
        pass


def bootstrap():
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
    with open("/ota/tmp/ota.json", "w") as f:
        json.dump(settings, f)
    try:
        os.rename("/ota/tmp/ota.json", "/ota.json")
    except OSError:
        os.remove("/ota.json")
        os.rename("/ota/tmp/ota.json", "/ota.json")

    mac = binascii.hexlify(network.WLAN(network.STA_IF).config("mac")).decode()
    print("mpfleet: board", mac, "server", server)
    try:
        sock = _get("%sv1/%s.json" % (server, mac))
    except OSError as e:
        if "HTTP 404" not in str(e):
            raise
        # The server saw us (`mpfleet device list --unknown`): say what to do.
        print("mpfleet: this board is not assigned on the server yet: run")
        print("  mpfleet device set %s --app YOUR_APP" % mac)
        print("then run bootstrap.py again")
        return
    try:
        manifest = json.loads(sock.read(4096))
    finally:
        sock.close()
    for name in ("config", "updater"):
        m = manifest["modules"][name]
        version = m["version"]
        for c in version:
            if not (c in "._-" or "a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9"):
                raise ValueError("bad version " + version)
        _mkdir("/ota/m/" + name)
        mpy = m.get("mpy")  # precompiled variant: take it if this port loads it
        if mpy and mpy.get("version") == getattr(sys.implementation, "_mpy", -1) & 0xFF:
            m = mpy
        ext = ".mpy" if m["url"].endswith(".mpy") else ".py"  # .mpy: precompiled
        path = "/ota/m/%s/%s%s" % (name, version, ext)
        try:
            installed = os.stat(path)[6] == m["size"]
        except OSError:
            installed = False
        if not installed:
            print("mpfleet: installing", name, version)
            _save(server + m["url"], path, m["size"], m["sha256"])
    _save(server + "main.py", "/main.py")

    rtc = machine.RTC()
    try:
        flags = json.loads(rtc.memory())
    except Exception:
        flags = {}
    flags["update"] = True
    rtc.memory(json.dumps(flags))
    print("mpfleet: bootstrap done; resetting into main.py")
    machine.reset()


bootstrap()
