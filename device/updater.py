# mpfleet updater: installs what the server says this board should run.
#
# main.py calls run() when the `update` bootflag is set (and on the first boot
# after bootstrap). It fetches {server}v1/{mac}.json and downloads only the
# modules whose version differs from the running configuration, each streamed
# into /ota/tmp/ and checked for size and SHA-256 before it moves to
# /ota/m/{module}/{version}.py (or .mpy: a module entry may offer an "mpy"
# variant, precompiled bytecode, taken when its version is this port's). With every file in place it writes the running
# configuration as /ota/alternate.json, the new one as /ota/primary.json, and
# resets. Any error leaves the configuration as it was and sets a bootflag:
#   server_failed  the manifest could not be fetched: no connection, timeout, 5xx
#   update_failed  anything else: 4xx, a bad manifest, a file that breaks off or
#                  fails its check, no room on flash, a generation rolled back from
# Every outcome is reported to {server}v1/{mac}/report, best effort.
#
# Written to fit a small heap: one 512-byte buffer for every download, no
# response or file is ever held whole in memory (only the manifest, <= 4 KB).
import binascii
import gc
import hashlib
import json
import os
import re
import socket
import sys

import config
import machine
from micropython import const

_MANIFEST_MAX = const(4096)
_TIMEOUT = const(10)
_REPORT_TIMEOUT = const(3)
_MARGIN_BLOCKS = const(4)
_OTA = "/ota/"
_TMP = "/ota/tmp/"

_buf = memoryview(bytearray(512))
# The .mpy major version this port loads; None (source only) if it does not say.
_MPY = getattr(sys.implementation, "_mpy", None)
_MPY = _MPY & 0xFF if _MPY is not None else None


class ServerFailed(Exception):
    pass


class _Body:
    # A response body, read with readinto(): Content-Length, chunked, or until close.
    def __init__(self, sock, length, chunked):
        self.sock = sock
        self.chunked = chunked
        self.left = 0 if chunked else length  # None: until the server closes

    def readinto(self, buf):
        if self.chunked and not self.left:
            line = self.sock.readline()
            if line == b"\r\n":  # the end of the previous chunk
                line = self.sock.readline()
            self.left = int(line.split(b";")[0], 16)
            self.chunked = self.left > 0
        if self.left == 0:
            return 0
        n = self.sock.readinto(buf, len(buf) if self.left is None else min(len(buf), self.left))
        if self.left is not None:
            if not n:
                raise OSError("connection closed mid-body")
            self.left -= n
        return n


def _feed():
    # Keep main.py's watchdog quiet while we work (config._wdt: None if none).
    wdt = getattr(config, "_wdt", None)
    if wdt:
        wdt.feed()


def _request(method, url, body=None, timeout=_TIMEOUT):
    # HTTP/1.1 with Connection: close. Returns (status, socket, _Body); the
    # caller closes the socket.
    _feed()
    proto, _, hostport, path = url.split("/", 3)
    if proto != "http:":
        raise ValueError("not http://: " + url)
    host, port = (hostport.split(":") + ["80"])[:2]
    addr = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)[0][-1]
    sock = socket.socket()
    try:
        sock.settimeout(timeout)
        sock.connect(addr)
        sock.write("%s /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, path, hostport))
        if body:
            sock.write("Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body))
        sock.write("\r\n")
        if body:
            sock.write(body)
        status = int(sock.readline().split(None, 2)[1])
        length = None
        chunked = False
        while True:
            line = sock.readline().lower()
            if line in (b"", b"\r\n"):
                return status, sock, _Body(sock, length, chunked)
            if line.startswith(b"content-length:"):
                length = int(line[15:])
            elif line.startswith(b"transfer-encoding:"):
                chunked = b"chunked" in line
    except:  # noqa: E722 -- close on any error, then re-raise
        sock.close()
        raise


def _settings():
    with open("/ota.json") as f:
        return json.load(f)


def mac():
    import network

    return binascii.hexlify(network.WLAN(network.STA_IF).config("mac")).decode()


def _read_json(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def _write_json(name, obj):
    # /ota/{name}.json by temporary file + rename: never half-written.
    tmp = _TMP + name + ".json"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    _replace(tmp, _OTA + name + ".json")


def _replace(src, dst):
    try:
        os.rename(src, dst)
    except OSError:  # FAT will not rename over an existing file
        os.remove(dst)
        os.rename(src, dst)


def _size(path):
    try:
        return os.stat(path)[6]
    except OSError:
        return None


def _fetch_manifest(server):
    url = "%sv1/%s.json" % (server, mac())
    try:
        status, sock, body = _request("GET", url)
    except OSError as e:
        raise ServerFailed("cannot reach %s: %s" % (server, e))
    try:
        if status != 200:
            raise (ServerFailed if status >= 500 else OSError)("HTTP %d for %s" % (status, url))
        if body.left and body.left > _MANIFEST_MAX:
            raise ValueError("manifest over %d bytes" % _MANIFEST_MAX)
        if body.left and not body.chunked:
            manifest = json.load(sock)  # parses straight from the socket: no buffer
        else:  # chunked or until close: into a capped buffer
            gc.collect()
            data = memoryview(bytearray(_MANIFEST_MAX))
            size = 0
            while size < _MANIFEST_MAX:
                n = body.readinto(data[size:])
                if not n:
                    break
                size += n
            if size == _MANIFEST_MAX:
                raise ValueError("manifest over %d bytes" % _MANIFEST_MAX)
            manifest = json.loads(data[:size])
            data = None
    finally:
        sock.close()
    # Names and versions become paths: check them before they touch one.
    name_ok = re.compile("^[A-Za-z_][A-Za-z0-9_]*$")
    version_ok = re.compile("^[A-Za-z0-9._-]+$")
    mods = manifest["modules"]
    for name, m in mods.items():
        v = m["version"]
        if not (name_ok.match(name) and version_ok.match(v) and len(v) <= 32):
            raise ValueError("bad module name or version: %s %s" % (name, v))
        if len(m["sha256"]) != 64 or not isinstance(m["size"], int):
            raise ValueError("bad size or sha256 for " + name)
    if not ("config" in mods and "updater" in mods and manifest["app"] in mods):
        raise ValueError("manifest lacks config, updater or its app")
    if not isinstance(manifest["generation"], int):
        raise ValueError("bad generation")
    return manifest


def _download(url, path, size, sha256):
    # Stream url into path, hashing as it goes; raise unless size and sha256 match.
    status, sock, body = _request("GET", url)
    h = hashlib.sha256()
    got = 0
    try:
        if status != 200:
            raise OSError("HTTP %d for %s" % (status, url))
        with open(path, "wb") as f:
            while got <= size:
                n = body.readinto(_buf)
                if not n:
                    break
                got += n
                h.update(_buf[:n])
                f.write(_buf[:n])
                _feed()
    finally:
        sock.close()
    if got != size:
        raise ValueError("%s: %d bytes, expected %d" % (url, got, size))
    if binascii.hexlify(h.digest()).decode() != sha256:
        raise ValueError("%s: sha256 mismatch" % url)


def variant(m, mpy):
    # The file to install for manifest entry m: its "mpy" variant when that is
    # bytecode this port loads (mpy: the port's .mpy major version), else m itself.
    v = m.get("mpy")
    if mpy is not None and isinstance(v, dict) and v.get("version") == mpy:
        if isinstance(v.get("size"), int) and len(v.get("sha256", "")) == 64:
            if v.get("url", "").endswith(".mpy"):
                return v
    return m


def _install(server, manifest, running):
    # Put in place every module running lacks, then swap the configurations.
    # On error remove what this call added and re-raise.
    mods = manifest["modules"]
    todo = []
    for name, m in mods.items():
        f = variant(m, _MPY)
        # A url ending in .mpy is precompiled bytecode; main.py's importer takes either.
        ext = ".mpy" if f["url"].endswith(".mpy") else ".py"
        path = "%sm/%s/%s%s" % (_OTA, name, m["version"], ext)
        if running["modules"].get(name) != m["version"] and _size(path) != f["size"]:
            todo.append((name, f, path))
    st = os.statvfs("/")
    need = _MARGIN_BLOCKS
    for name, m, path in todo:
        need += m["size"] // st[0] + 2
    if need > st[4]:
        raise OSError("no room on flash: %d blocks needed, %d free" % (need, st[4]))
    added = []
    try:
        for name, m, path in todo:
            print("mpfleet: downloading", name, m["url"])
            tmp = _TMP + name
            added.append(tmp)
            _download(server + m["url"], tmp, m["size"], m["sha256"])
            for d in (_OTA + "m", _OTA + "m/" + name):
                if _size(d) is None:
                    os.mkdir(d)
            added.append(path)
            _replace(tmp, path)
            gc.collect()
        new = {"generation": manifest["generation"], "app": manifest["app"], "modules": {}}
        for name, m in mods.items():
            new["modules"][name] = m["version"]
        if running["generation"] is not None:
            _write_json("alternate", running)
        _write_json("primary", new)
    except:  # noqa: E722 -- undo, then re-raise
        for path in added:
            try:
                os.remove(path)
            except OSError:
                pass
        raise
    try:
        _remove_unused(new["modules"], running["modules"])
    except OSError as e:  # tidying only: the update itself is done
        print("mpfleet: cleanup:", e)
    if hasattr(os, "sync"):
        os.sync()
    return new


def _remove_unused(primary, alternate):
    # Delete installed versions that neither configuration names.
    for name in os.listdir(_OTA + "m"):
        d = _OTA + "m/" + name
        keep = (primary.get(name), alternate.get(name))
        for file in os.listdir(d):
            if file.rsplit(".", 1)[0] not in keep:
                os.remove(d + "/" + file)
        if not os.listdir(d):
            os.rmdir(d)


def report(event, error=None):
    # POST what happened to {server}v1/{mac}/report. Never raises.
    try:
        body = json.dumps(
            {
                "event": event,
                "generation": config.generation,
                "config": "primary" if config.primary else "alternate" if config.alternate else None,
                "modules": config.modules,
                "flags": config.bootflags(),
                "error": error,
                "mem_free": gc.mem_free(),
                "micropython": "%d.%d.%d" % sys.implementation.version[:3],
                "mpy": getattr(sys.implementation, "_mpy", None),
            }
        )
        url = "%sv1/%s/report" % (_settings()["server"], mac())
        status, sock, _ = _request("POST", url, body, _REPORT_TIMEOUT)
        sock.close()
        if status not in (200, 204):
            print("mpfleet: report got HTTP", status)
    except Exception as e:
        print("mpfleet: report failed:", e)


def _update():
    # Returns the event to report: 'updated', or 'boot' when there is nothing new.
    server = _settings()["server"]
    manifest = _fetch_manifest(server)
    generation = manifest["generation"]
    if generation == config.generation:
        return "boot"
    if generation in _read_json(_OTA + "bad.json", ()):
        raise ValueError("generation %d was rolled back from" % generation)
    running = {"generation": config.generation, "app": config.app, "modules": config.modules}
    config.init("primary", _install(server, manifest, running))
    return "updated"


def run():
    flags = config.bootflags()
    for flag in ("update", "update_failed", "server_failed"):
        flags.pop(flag, None)
    config._save(flags)
    error = None
    try:
        event = _update()
    except ServerFailed as e:
        event, error = "server_failed", str(e)
    except Exception as e:
        event, error = "update_failed", "%s: %s" % (type(e).__name__, e)
    gc.collect()
    print("mpfleet:", event, error or config.generation)
    flags = config.bootflags()
    if error:
        flags[event] = True
    elif event == "updated":
        flags["reboots"] = 0
        flags.pop("error", None)
    config._save(flags)
    report(event, error)
    if event == "updated":
        machine.reset()
