# mpfleet installer: puts in place what a checked manifest names, then swaps
# the configurations. The updater checks the manifest (its seal, its
# generation) and resets into this module's run() with the `next` bootflag
# (docs/board.md): this boot has only this module and updater_io on the heap,
# the most a download ever needs. The bootstrap calls files() directly. When
# the manifest lists deltas, updater_delta's boot comes first and makes the
# files it can from them: they are in place, and not downloaded again.
#
# Each module file the board lacks streams into /ota/tmp/, is checked for size
# and SHA-256, and moves to /ota/m/{module}/{file}, named by its version and
# the SHA-256 of its bytes (its "mpy" variant, precompiled bytecode, when that
# is this port's .mpy version). With every file in place the running
# configuration becomes the alternate if it is confirmed (its app said it is
# healthy; otherwise the alternate stays), the new one becomes
# /ota/primary.json, and the board resets into the reporter, which reports.
# Any error leaves the configuration as it was: update_failed, reported the
# same way (out of memory: retried twice on a fresh heap first). The reporter
# then deletes the files neither configuration names.
import gc
import os
import sys

import json
import updater_io as io

_MARGIN = const(4)  # flash blocks kept free
_RETRIES = const(2)
_GZ_FREE = const(8192)  # heap free, at least, to inflate a download
_OTA = "/ota/"
_TMP = "/ota/tmp/"
NEXT = "/ota/next.json"  # the manifest the updater checked, for run()

# The .mpy major version this port loads; None (source only) if it does not say.
_MPY = getattr(sys.implementation, "_mpy", None)
_MPY = _MPY & 0xFF if _MPY is not None else None


def lines(path, section="modules"):
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
        f = None  # closed, but it holds its buffer while the caller downloads
        if not line.startswith('"'):
            if not line.startswith("}"):
                raise ValueError(path + " is cut short")
            return
        # "name":{...}, or "name":[...], parsed in place (json.loads takes a
        # memoryview): no copies of the line
        i = line.find('"', 1)
        j = max(line.rfind("}"), line.rfind("]")) + 1
        i, j = line[1:i], json.loads(memoryview(line)[i + 2 : j])
        line = None  # not held while the caller downloads
        yield i, j


def exists(path):
    try:
        return os.stat(path)
    except OSError:
        return None


def _ok(s, size, extra):
    if not 0 < len(s) <= size:
        return False
    for c in s:
        if not ("a" <= c <= "z" or "A" <= c <= "Z" or "0" <= c <= "9" or c in extra):
            return False
    return True


def entry(name, m):
    # What to install for manifest entry m of module `name`: (version, file
    # name on flash, size, sha256, url, url of its gzip copy or None). Checks
    # every field that becomes part of a path or a request.
    v = m["version"]
    x = m.get("mpy")
    if _MPY is not None and isinstance(x, dict) and x.get("version") == _MPY:
        m = x  # precompiled bytecode this port loads
    sha, size, url = m["sha256"], m["size"], m["url"]
    gz = m.get("gz")
    gz = gz.get("url") if isinstance(gz, dict) else None
    if not (
        _ok(name, 64, "_")
        and name[0] > "9"
        and _ok(v, 32, "._-")
        and isinstance(size, int)
        and _ok(sha, 64, "")
        and len(sha) == 64
        and _ok(url, 200, "._-/")
        and ".." not in url
        and (gz is None or _ok(gz, 200, "._-/") and ".." not in gz)
    ):
        raise ValueError("bad manifest entry: " + name)
    return v, "%s-%s%s" % (v, sha[:12], ".mpy" if url.endswith(".mpy") else ".py"), size, sha, url, gz


def _inflater():
    # How to read a gzip copy (docs/protocol.md): a 1 KiB window and about
    # 1.3 KB of decoder state. None, and the plain file is fetched, on a port
    # without `deflate` (before 1.21), when the heap is short, or on a retry
    # after running out of memory.
    try:
        from deflate import GZIP, DeflateIO
    except ImportError:
        return None
    gc.collect()
    if gc.mem_free() < _GZ_FREE or io.flags().get("retry"):
        return None
    return lambda sock: DeflateIO(sock, GZIP, 10)


def install(server, e, path):
    # Download a manifest entry to /ota/tmp (its gzip copy if it has one and
    # this board can inflate it), check it, move it to path.
    import binascii
    import hashlib

    z = e[5] and _inflater()
    url = e[5] if z else e[4]
    print("mpfleet: downloading", url)
    h = hashlib.sha256()
    try:
        io.get(server + url, _TMP + "dl", h, e[2], False, z)
    except (OSError, EOFError) as x:
        if not z:
            raise
        raise ValueError("%s: cannot inflate (%s: %s)" % (url, type(x).__name__, x))
    if binascii.hexlify(h.digest()).decode() != e[3]:
        raise ValueError(url + ": sha256 mismatch")
    io.replace(_TMP + "dl", path)


def files(server, g, app, manifest):
    # Put in place every file generation g (app `app`, as the checked
    # manifest on flash says) lacks, then swap the configurations. On error
    # the files it added stay (a retry needs them) until the reporter's
    # tidy(), which runs after every install (and, when there was no room,
    # asks for the update again if it deleted anything).
    st = os.statvfs("/")
    need = _MARGIN
    found = 0
    for name, m in lines(manifest):
        e = entry(name, m)
        found += name in ("config", "updater", "updater_trust", "reporter", "installer", "updater_io") or name == app
        if not exists("%sm/%s/%s" % (_OTA, name, e[1])):
            need += e[2] // st[0] + 2
    m = e = None  # the last entry's strings
    if found != 7:
        raise ValueError("manifest lacks its app or a part of the runtime")
    if need > st[4]:
        raise OSError("no room on flash: %d blocks needed, %d free" % (need, st[4]))
    st = None
    try:
        for name, m in lines(manifest):
            e = entry(name, m)
            d = "%sm/%s" % (_OTA, name)
            if not exists(d + "/" + e[1]):
                if not exists(d):
                    os.mkdir(d)
                m.clear()  # its strings (three SHA-256s, URLs): not held during the download
                install(server, e, d + "/" + e[1])
                gc.collect()
        with open(_TMP + "primary.json", "w") as out:
            out.write('{"generation":%d,"app":"%s","confirmed":false,"modules":{' % (g, app))
            sep = "\n"
            for name, m in lines(manifest):
                e = entry(name, m)
                out.write('%s"%s":["%s","%s","%s"]' % (sep, name, e[0], e[1], e[3]))
                sep = ",\n"
            out.write("\n}}\n")
        run = io.now
        if run and run[0] == "primary" and _confirmed(run[1]):
            # The running configuration becomes the alternate: a copy, renamed
            # over the old one, so that a power cut never leaves no primary.
            buf = memoryview(bytearray(128))
            with open(_OTA + "primary.json") as f, open(_TMP + "alternate.json", "w") as out:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    out.write(buf[:n])
            io.replace(_TMP + "alternate.json", _OTA + "alternate.json")
        io.remove(_OTA + "confirmed.json")  # first: the new primary is not, even if its number was
        io.replace(_TMP + "primary.json", _OTA + "primary.json")
    finally:
        io.remove(_TMP + "dl")
        io.remove(_TMP + "primary.json")
        io.remove(_TMP + "alternate.json")
    if hasattr(os, "sync"):
        os.sync()
    io.now = ("primary", {"generation": g, "app": app}, io.now and io.now[2])  # runs now


def _confirmed(head):
    # Whether the running primary is confirmed: config.py writes its generation
    # number to /ota/confirmed.json (an older config marked the head line instead).
    try:
        with open(_OTA + "confirmed.json") as f:
            return f.read() == str(head["generation"])
    except OSError:
        return head.get("confirmed", False)


def run(now, g, app):
    # The install boot. Resets into the updater's finish(), which reports.
    io.now = now
    error = None
    try:
        files(io.settings()["server"], g, app, NEXT)
    except Exception as e:
        error = "%s: %s" % (type(e).__name__, e)
    gc.collect()
    print("mpfleet: installed", g) if error is None else print("mpfleet: update_failed", error)
    f = io.flags()
    retry = f.get("retry", 0)
    if error and error.startswith("MemoryError") and retry < _RETRIES:
        f["retry"] = retry + 1
        f["reboots"] = f.get("reboots", 1) - 1  # not a boot loop
        io.save(f, ["installer", "run", g, app])  # again, on a fresh heap
    io.remove(NEXT)
    f.pop("retry", None)
    if error:
        f["update_failed"] = True
        f["reboots"] = f.get("reboots", 1) - 1
        io.save(f, ["reporter", "finish", "update_failed", error])
    f["reboots"] = 0
    f.pop("error", None)
    f.pop("check", None)
    io.save(f, ["reporter", "finish", "updated", None])
