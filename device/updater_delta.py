# mpfleet updater_delta: the delta boot. When the manifest the updater checked
# lists deltas (`from`: src/delta.rs, docs/protocol.md), the updater resets
# into run() here before the installer: for each module whose file the running
# configuration has and the manifest lists a delta from, it fetches the delta
# and makes the new file from it and that file, checked against the manifest's
# size and SHA-256 like any download, straight into /ota/m/. Then it resets
# into the installer, which finds those files in place and downloads only the
# rest. This boot has only this module and updater_io on the heap, less than
# the installer's; anything that fails here is left to the installer, which
# fetches the whole file.
#
# A delta is "MPD1", then operations: C off len (copy len bytes of the
# board's file from offset off) and I len, then len bytes (insert them); off
# and len are little-endian u32s. Patch reads the new file from it, as the
# installer reads an inflater.
import gc
import json
import os
import sys

import updater_io as io

_OTA = "/ota/"
_MPY = getattr(sys.implementation, "_mpy", None)  # as installer.py
_MPY = _MPY & 0xFF if _MPY is not None else None


def _fill(src, mv, n):
    # Read exactly n bytes of src into mv.
    i = 0
    while i < n:
        k = src.readinto(mv[i:n])
        if not k:
            raise OSError("cut short")
        i += k


class Patch:
    # The new file, read from the delta on socket s and the board's file b.
    def __init__(self, s, b):
        self.s, self.b = s, b
        self.h = memoryview(bytearray(4))
        self.n = 0  # bytes left in the operation
        self.src = None
        _fill(s, self.h, 4)
        if bytes(self.h) != b"MPD1":
            raise ValueError("not a delta")

    def _u32(self):
        _fill(self.s, self.h, 4)
        return int.from_bytes(self.h, "little")

    def readinto(self, buf, n):
        while not self.n:
            if not self.s.readinto(self.h[:1]):
                return 0  # the end of the delta
            op = self.h[0]
            self.src = self.s
            if op == 67:  # C
                self.b.seek(self._u32())
                self.src = self.b
            elif op != 73:  # I
                raise ValueError("not a delta")
            self.n = self._u32()
        k = self.src.readinto(buf[: min(n, self.n)])
        if not k:
            raise OSError("cut short")
        self.n -= k
        return k


def _entries(path):
    # Yields (name, entry) for each module line of the manifest at path that
    # lists deltas; the file is open only while a line is read.
    pos = 0
    while True:
        with open(path) as f:
            f.seek(pos)
            line = f.readline()
            pos = f.tell()
        if not line.startswith(('"', "{")):
            return
        if '"from":' in line and line[0] == '"':
            i = line.find('"', 1)
            i, j = line[1:i], json.loads(memoryview(line)[i + 2 : line.rfind("}") + 1])
            line = None
            yield i, j


def _running(name):
    # The file the running configuration has for module `name`, or None.
    key = '"%s":' % name
    with open(_OTA + io.now[0] + ".json") as f:
        for line in f:  # "name":["version","file","sha256"],
            if line.startswith(key):
                return line.split('"')[5]


def _one(server, name, m):
    # Make module `name`'s new file (manifest entry m) from a delta, if the
    # manifest lists one from the file the board runs.
    import binascii
    import hashlib

    v = m["version"]
    x = m.get("mpy")
    if _MPY is not None and isinstance(x, dict) and x.get("version") == _MPY:
        m = x  # the variant the installer takes
    sha, size, url, d = m["sha256"], m["size"], m["url"], m.get("from")
    f = _running(name)
    if not (f and isinstance(d, list) and isinstance(size, int)):
        return
    x = f[f.rfind("-") + 1 :][:12]
    ext = ".mpy" if url.endswith(".mpy") else ".py"
    if x not in d or not f.endswith(ext) or "/" in name + v or ".." in name + v + url:
        return
    new = "%sm/%s/%s-%s%s" % (_OTA, name, v, sha[:12], ext)
    try:
        return os.stat(new) and None  # in place already
    except OSError:
        pass
    url = "%s.from-%s" % (url, x)
    print("mpfleet: downloading", url)
    h = hashlib.sha256()
    with open("%sm/%s/%s" % (_OTA, name, f), "rb") as b:
        io.get(server + url, _OTA + "tmp/dl", h, size, False, lambda s: Patch(s, b))
    if binascii.hexlify(h.digest()).decode() != sha:
        raise ValueError(url + ": sha256 mismatch")
    io.replace(_OTA + "tmp/dl", new)


def run(now, g, app):
    # The delta boot; resets into the installer's, whatever happens.
    io.now = now
    try:
        server = io.settings()["server"]
        for name, m in _entries(_OTA + "next.json"):
            try:
                _one(server, name, m)
            except Exception as e:  # noqa: BLE001 -- the installer fetches the whole file
                print("mpfleet: no delta:", type(e).__name__, e)
            m = None
            gc.collect()
    except Exception as e:  # noqa: BLE001 -- likewise
        print("mpfleet: no delta:", type(e).__name__, e)
    io.remove(_OTA + "tmp/dl")
    f = io.flags()
    f["reboots"] = f.get("reboots", 1) - 1  # not a boot loop
    io.save(f, ["installer", "run", g, app])
