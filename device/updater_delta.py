# mpfleet updater_delta: a delta (src/delta.rs, docs/protocol.md) applied as a
# stream. The installer imports it only for a manifest entry that lists deltas
# (`from`), calls fetch(), and drops the module afterwards: a download without
# one has its heap.
#
# A delta is "MPD1", then operations: C off len (copy len bytes of the
# board's file from offset off) and I len, then len bytes (insert them); off
# and len are little-endian u32s.


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


def fetch(server, e, name, path):
    # If the running configuration's file for module `name` is one manifest
    # entry e (installer.entry) lists a delta from, make e's file at path from
    # that delta, checked like any download, and return True; False when there
    # is no such file, or on a retry after running out of memory. Raises when
    # it fails.
    import binascii
    import hashlib

    import updater_io as io
    from installer import lines

    if not io.now or io.flags().get("retry") or not isinstance(e[6], list):
        return False
    for n, m in lines("/ota/%s.json" % io.now[0]):
        if n == name:
            break
    else:
        return False
    f = m[1]  # {version}-{sha12}.py or .mpy: of e's kind
    x = f[f.rfind("-") + 1 :][:12]
    if x not in e[6] or f.endswith(".mpy") != e[1].endswith(".mpy"):
        return False
    url = "%s.from-%s" % (e[4], x)
    print("mpfleet: downloading", url)
    h = hashlib.sha256()
    with open("/ota/m/%s/%s" % (name, f), "rb") as b:
        io.get(server + url, path, h, e[2], False, lambda s: Patch(s, b))
    if binascii.hexlify(h.digest()).decode() != e[3]:
        raise ValueError(url + ": sha256 mismatch")
    return True
