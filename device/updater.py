# mpfleet updater: installs what the server says this board should run.
#
# The first stage (mpfleet.py) calls run() when the `update` bootflag is set, when the board is
# stuck (every configuration it has loops), or to report a rollback; the first
# stage is unloaded meanwhile, and `config` is not loaded yet: the updater
# has the heap to itself. It streams {server}v1/{mac}.json to
# /ota/tmp/manifest.json, then reads it a line at a time (the server writes one
# module per line), so a manifest of any size takes the same heap. Each module
# file the board lacks streams into /ota/tmp/, is checked for size and
# SHA-256, and moves to /ota/m/{module}/{file}, named by its version and the
# SHA-256 of its bytes (its "mpy" variant, precompiled bytecode, when that is
# this port's .mpy version). With every file in place the running
# configuration becomes the alternate if it is confirmed (its app said it is
# healthy; otherwise the alternate stays), the new one becomes
# /ota/primary.json, and the board resets. Any error leaves the configuration
# as it was and sets a bootflag:
#   server_failed  the manifest could not be fetched: no connection, timeout, 5xx
#   update_failed  anything else: 4xx, a bad manifest, a file that breaks off or
#                  fails its check, no room on flash, a generation rolled back
#                  from, out of memory (retried twice on a fresh heap), or a
#                  stuck board that found nothing new
# Every outcome is reported to {server}v1/{mac}/report, best effort.
#
# Trust (docs/security.md): the manifest arrives sealed, its first line
# {"hmac":"<hex>"} the HMAC-SHA256 of the rest under this board's key
# (/ota.json "key"), checked over the bytes as they stream to flash before
# anything in them is used; it must name this board and its store (/ota.json
# "store"), and a generation no lower than the highest this board accepted
# (/ota/trust.json "gen"), so a replayed old manifest cannot bring old code
# back. Every file is then checked against the manifest's SHA-256. Reports
# carry a counter "n" (/ota/trust.json "n", written before it is used, so
# never reused) and their HMAC in the X-Mpfleet-Hmac header.
#
# HTTP/1.1 with Content-Length or until the server closes (no chunked bodies:
# mpfleet serve, nginx and Home Assistant send Content-Length for files).
import binascii
import gc
import json
import os
import sys

import machine

_MAX = const(65536)  # manifest bytes
_TIMEOUT = const(10)
_MARGIN = const(4)  # flash blocks kept free
_RETRIES = const(2)
_OTA = "/ota/"
_TMP = "/ota/tmp/"
# hashlib, socket and time are imported where they are used, the manifest's
# path is spelled out, `const` is not imported (the compiler knows it) and
# _tidy keeps its helper inside: every global past 37 would make the module's
# globals table grow to 47 entries (a 752-byte block) as it loads.

_buf = memoryview(bytearray(512))
# What runs: (which, head, mpfleet.py's Watch or None), from the first stage;
# None on a board that runs nothing yet (the bootstrap).
_run = None
# The .mpy major version this port loads; None (source only) if it does not say.
_MPY = getattr(sys.implementation, "_mpy", None)
_MPY = _MPY & 0xFF if _MPY is not None else None


class ServerFailed(Exception):
    pass


def _flags():
    # The bootflags (config.py says what they are).
    try:
        flags = json.loads(machine.RTC().memory())
    except Exception:
        flags = {}
    return flags if isinstance(flags, dict) else {}


def alive():
    # Work is progressing: feed the watchdog and keep its timer feeding it 30 s
    # more (unless the app already said it is healthy: then it feeds for ever).
    import time

    w = _run and _run[2]
    if w:
        w.wdt.feed()
        if w.until is not None:
            w.until = time.ticks_add(time.ticks_ms(), 30000)


def _gen():
    return _run[1]["generation"] if _run else None


def _hmac(h=None, k=None):
    # HMAC-SHA256 under this board's key. Without h: (inner hash to feed, outer
    # key pad); with them: the HMAC of what h was fed, in hex.
    import hashlib

    if h:
        k = hashlib.sha256(k)
        k.update(h.digest())
        return binascii.hexlify(k.digest())
    k = _settings().get("key") or ""
    if len(k) != 64:
        raise ValueError("no key: run `mpfleet device bootstrap`")
    k = bytearray(binascii.unhexlify(k) + bytes(32))
    for i in range(64):
        k[i] ^= 0x36
    h = hashlib.sha256(k)
    for i in range(64):
        k[i] ^= 0x6A  # 0x36 ^ 0x5C: the outer pad
    return h, k


def _trust(t=None):
    # /ota/trust.json, {"gen": highest generation accepted, "n": last report
    # counter}: read it (t None) or write t in its place, atomically.
    if t is not None:
        with open(_TMP + "trust.json", "w") as f:
            json.dump(t, f)
        return replace(_TMP + "trust.json", _OTA + "trust.json")
    try:
        with open(_OTA + "trust.json") as f:
            t = json.load(f)
    except (OSError, ValueError):
        pass
    return t if isinstance(t, dict) else {}


def _request(method, url, body=None, timeout=None, sign=None):
    # Returns (status, socket at the body, Content-Length or None); the caller
    # closes the socket. The timeout: /ota.json "timeout" seconds, 10 by default.
    import socket

    alive()
    timeout = timeout or _settings().get("timeout", _TIMEOUT)
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
        if body:
            sock.write("Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body))
        if sign:
            sock.write(b"X-Mpfleet-Hmac: " + sign + b"\r\n")
        sock.write("\r\n")
        if body:
            sock.write(body)
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


def _get(url, path, size=_MAX, sha=None, sealed=False):
    # Stream url into path; raise unless it is `size` bytes with SHA-256 `sha`
    # (with sha None: at most `size` bytes). sealed: the body is an envelope
    # line, then the bytes it signs, which go to path, checked under the key.
    import hashlib

    status, sock, length = _request("GET", url)
    k = seal = None
    got = 0
    try:
        if status != 200:
            raise (ValueError if status < 500 else OSError)("HTTP %d for %s" % (status, url))
        if sealed:
            h, k = _hmac()
            seal = sock.readline(76)
            got = len(seal)
            if not (got == 76 and seal.startswith(b'{"hmac":"') and seal.endswith(b'"}\n')):
                raise ValueError("manifest is not signed: refused")
        else:
            h = hashlib.sha256()
        with open(path, "wb") as f:
            while length is None or got < length:
                n = sock.readinto(_buf, 512 if length is None else min(512, length - got))
                if not n:
                    if length is not None:
                        raise OSError("connection closed mid-body")
                    break
                got += n
                if got > size:
                    break
                h.update(_buf[:n])
                f.write(_buf[:n])
                alive()
    finally:
        sock.close()
    if got > size or sha and got != size:
        raise ValueError("%s: %d bytes, not %d" % (url, got, size))
    if k:
        if _hmac(h, k) != seal[9:73]:
            raise ValueError("manifest not signed with this board's key: refused")
    elif sha and binascii.hexlify(h.digest()).decode() != sha:
        raise ValueError(url + ": sha256 mismatch")


def _settings():
    with open("/ota.json") as f:
        return json.load(f)


def mac():
    import network

    return binascii.hexlify(network.WLAN(network.STA_IF).config("mac")).decode()


def _lines(path, section="modules"):
    # Yields (name, entry) for every line of a section ("modules" or "boot")
    # of a manifest or a configuration on flash; raises if it is cut short.
    # The file is open only while a line is read: a download the caller runs
    # meanwhile has the heap to itself.
    pos = None
    while True:
        with open(path) as f:
            if pos is None:
                line = f.readline()
                if section != "modules":
                    while line and not line.startswith('},"%s"' % section):
                        line = f.readline()
            else:
                f.seek(pos)
            line = f.readline()
            pos = f.tell()
        if not line.startswith('"'):
            if not line.startswith("}"):
                raise ValueError(path + " is cut short")
            return
        # "name":{...}, or "name":[...], parsed in place (json.loads takes a
        # memoryview): no copies of the line
        i = line.find('"', 1)
        j = max(line.rfind("}"), line.rfind("]")) + 1
        yield line[1:i], json.loads(memoryview(line)[i + 2 : j])


def _ok(s, size, extra):
    if not 0 < len(s) <= size:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in extra):
            return False
    return True


def entry(name, m):
    # What to install for manifest entry m of module `name`:
    # (version, file name on flash, size, sha256, url). Checks every field
    # that becomes part of a path or a request.
    v = m["version"]
    x = m.get("mpy")
    if _MPY is not None and isinstance(x, dict) and x.get("version") == _MPY:
        m = x  # precompiled bytecode this port loads
    sha, size, url = m["sha256"], m["size"], m["url"]
    if not (
        _ok(name, 64, "_")
        and name[0] > "9"
        and _ok(v, 32, "._-")
        and isinstance(size, int)
        and _ok(sha, 64, "")
        and len(sha) == 64
        and _ok(url, 200, "._-/")
        and ".." not in url
    ):
        raise ValueError("bad manifest entry: " + name)
    return v, "%s-%s%s" % (v, sha[:12], ".mpy" if url.endswith(".mpy") else ".py"), size, sha, url


def _exists(path):
    try:
        return os.stat(path)
    except OSError:
        return None


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


def manifest(server):
    # Streams the manifest to flash and checks its seal; returns its first line
    # (generation, app...).
    me = mac()
    try:
        _get("%sv1/%s.json" % (server, me), _TMP + "manifest.json", sealed=True)
    except OSError as e:
        raise ServerFailed("cannot reach %s: %s" % (server, e))
    try:
        with open(_TMP + "manifest.json") as f:
            head = json.loads(f.readline() + "}}")
    except ValueError:
        raise ValueError("manifest is not JSON with one module per line")
    g = head.get("generation")
    if not (isinstance(g, int) and _ok(head.get("app") or "", 64, "_")):
        raise ValueError("bad generation or app")
    if head.get("device") != me:
        raise ValueError("manifest of device %s" % head.get("device"))
    if head.get("store") != _settings().get("store"):
        raise ValueError("manifest of another store")
    t = _trust().get("gen", 0)
    if g < t:
        raise ValueError("generation %d is older than %d, accepted before: refused" % (g, t))
    return head


def install(server, e, path):
    # Download a manifest entry to /ota/tmp, check it, move it to path.
    print("mpfleet: downloading", e[4])
    _get(server + e[4], _TMP + "dl", e[2], e[3])
    replace(_TMP + "dl", path)


def _install(server, g, app):
    # Put in place every file generation g lacks, then swap the configurations.
    # On error remove what this call added (the files neither configuration
    # names) and re-raise.
    st = os.statvfs("/")
    need = _MARGIN
    found = 0
    for name, m in _lines(_TMP + "manifest.json"):
        e = entry(name, m)
        found += name == "config" or name == "updater" or name == app
        if not _exists("%sm/%s/%s" % (_OTA, name, e[1])):
            need += e[2] // st[0] + 2
    if found != 3:
        raise ValueError("manifest lacks config, updater or its app")
    if need > st[4]:
        raise OSError("no room on flash: %d blocks needed, %d free" % (need, st[4]))
    st = None
    try:
        for name, m in _lines(_TMP + "manifest.json"):
            e = entry(name, m)
            d = "%sm/%s" % (_OTA, name)
            if not _exists(d + "/" + e[1]):
                if not _exists(d):
                    os.mkdir(d)
                m = None
                install(server, e, d + "/" + e[1])
                gc.collect()
        with open(_TMP + "primary.json", "w") as out:
            out.write('{"generation":%d,"app":"%s","confirmed":false,"modules":{' % (g, app))
            sep = "\n"
            for name, m in _lines(_TMP + "manifest.json"):
                e = entry(name, m)
                out.write('%s"%s":["%s","%s","%s"]' % (sep, name, e[0], e[1], e[3]))
                sep = ",\n"
            out.write("\n}}\n")
        if _run and _run[0] == "primary" and _run[1].get("confirmed"):
            # The running configuration becomes the alternate: a copy, renamed
            # over the old one, so that a power cut never leaves no primary.
            with open(_OTA + "primary.json") as f, open(_TMP + "alternate.json", "w") as out:
                while True:
                    n = f.readinto(_buf)
                    if not n:
                        break
                    out.write(_buf[:n])
            replace(_TMP + "alternate.json", _OTA + "alternate.json")
        replace(_TMP + "primary.json", _OTA + "primary.json")
    except:  # noqa: E722 -- undo, then re-raise
        try:
            _tidy()
        except OSError:
            pass
        raise
    try:
        _tidy()
    except OSError as e:  # tidying only: the update itself is done
        print("mpfleet: cleanup:", e)
    if hasattr(os, "sync"):
        os.sync()


def _tidy():
    # Delete installed files that neither configuration names.
    def _file_of(configuration, name):
        try:
            for n, m in _lines(_OTA + configuration + ".json"):
                if n == name:
                    return m[1]
        except OSError:
            pass

    for name in os.listdir(_OTA + "m"):
        d = _OTA + "m/" + name
        keep = (_file_of("primary", name), _file_of("alternate", name))
        for file in os.listdir(d):
            if file not in keep:
                os.remove(d + "/" + file)
        if not os.listdir(d):
            os.rmdir(d)


def report(event, error=None):
    # POST what happened to {server}v1/{mac}/report, signed. Never raises.
    try:
        modules = {}
        if _run:
            for n, m in _lines(_OTA + _run[0] + ".json"):
                modules[n] = m[0]
        t = _trust()
        t["n"] = t.get("n", 0) + 1
        _trust(t)  # on flash before it is used: never used twice
        body = json.dumps(
            {
                "n": t["n"],
                "high": t.get("gen"),
                "event": event,
                "generation": _gen(),
                "config": _run and _run[0],
                "modules": modules,
                "flags": _flags(),
                "error": error,
                "mem_free": gc.mem_free(),
                "micropython": "%d.%d.%d" % sys.implementation.version[:3],
                "mpy": getattr(sys.implementation, "_mpy", None),
            }
        )
        modules = t = None
        h, k = _hmac()
        h.update(body)
        k = _hmac(h, k)
        status, sock, _ = _request("POST", "%sv1/%s/report" % (_settings()["server"], mac()), body, 3, k)
        sock.close()
        if status not in (200, 204):
            print("mpfleet: report got HTTP", status)
    except Exception as e:
        print("mpfleet: report failed:", e)


def running():
    # /ota/primary.json runs now (after an update; at a bootstrap, if any).
    global _run
    with open(_OTA + "primary.json") as f:
        _run = ("primary", json.loads(f.readline() + "}}"), _run and _run[2])


def _update(stuck):
    # Returns the event to report: 'updated', or 'boot' when there is nothing new.
    server = _settings()["server"]
    try:
        head = manifest(server)
        g, app = head["generation"], head["app"]
        if g == _gen():
            if stuck:
                raise ValueError("no newer generation yet")
            return "boot"
        try:
            with open(_OTA + "bad.json") as f:
                if g in json.load(f):
                    raise ValueError("generation %d was rolled back from" % g)
        except OSError:
            pass
        t = _trust()
        if g > t.get("gen", 0):
            t["gen"] = g  # accepted: nothing lower will be from now on
            _trust(t)
        head = t = None  # not kept on the heap during the downloads
        _install(server, g, app)
    finally:
        # one by one: a tuple of names would be a second copy of each string
        remove(_TMP + "manifest.json")
        remove(_TMP + "dl")
        remove(_TMP + "primary.json")
        remove(_TMP + "alternate.json")
    running()
    return "updated"


def run(now, update=True, stuck=False, rolled_back=None, done=None):
    # now: what runs, as _run above. done: called after a successful update,
    # before the reset (the bootstrap installs /main.py last).
    global _run
    _run = now
    if rolled_back:
        report("rolled_back", rolled_back)
    if not update:
        return
    flags = _flags()
    flags.pop("update", None)
    flags.pop("update_failed", None)
    flags.pop("server_failed", None)
    machine.RTC().memory(json.dumps(flags))
    error = None
    try:
        event = _update(stuck)
    except ServerFailed as e:
        event, error = "server_failed", str(e)
    except Exception as e:
        event, error = "update_failed", "%s: %s" % (type(e).__name__, e)
    if stuck and error:
        error = "boot loop on generation %s (reboots %s); %s" % (
            _gen(),
            _flags().get("reboots"),
            error,
        )
    gc.collect()
    print("mpfleet:", event, error or _gen())
    flags = _flags()
    retry = error and error.startswith("MemoryError") and flags.get("retry", 0) < _RETRIES
    if error:
        flags[event] = True
    if retry:
        flags["retry"] = flags.get("retry", 0) + 1
        flags["update"] = True  # again, on a fresh heap
        flags["reboots"] = flags.get("reboots", 1) - 1  # not a boot loop
    else:
        flags.pop("retry", None)
    if event == "updated":
        flags["reboots"] = 0
        flags.pop("error", None)
        flags.pop("check", None)
    machine.RTC().memory(json.dumps(flags))
    report(event, error)
    if event == "updated" and done:
        done()
    if event == "updated" or retry:
        machine.reset()
