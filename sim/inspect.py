# `mpfleet sim --inspect IMAGE`: what a board's littlefs2 flash image holds, as
# one JSON object on stdout. Read-only: the block device refuses writes.
#   {"blocks": 256, "free": 200,
#    "dirs": ["/ota", ...],
#    "files": {"/ota/primary.json": {"size": 80, "sha256": "...", "text": "..."}, ...}}
# `text` is given for .json files only. Exit 1 if the image does not mount.
import binascii
import hashlib
import json
import os
import sys

import vfs

_BLOCK = 4096


class ReadOnly:
    def __init__(self, f, blocks):
        self.f = f
        self.blocks = blocks

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * _BLOCK + offset)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, offset=0):
        raise OSError(30)  # EROFS

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return _BLOCK
        if op == 6:
            raise OSError(30)
        return None


def walk(fs, path, dirs, files, buf):
    for entry in fs.ilistdir(path or "/"):
        name, kind = entry[0], entry[1]
        full = path + "/" + name
        if kind == 0x4000:
            dirs.append(full)
            walk(fs, full, dirs, files, buf)
            continue
        h = hashlib.sha256()
        size = 0
        text = b""
        with fs.open(full, "rb") as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                size += n
                h.update(buf[:n])
                if name.endswith(".json") and len(text) < 8192:
                    text += bytes(buf[:n])
        info = {"size": size, "sha256": binascii.hexlify(h.digest()).decode()}
        if name.endswith(".json"):
            info["text"] = text.decode()
        files[full] = info


def main():
    image = os.getenv("MPFLEET_FLASH_IMG")
    f = open(image, "rb")
    f.seek(0, 2)
    blocks = f.tell() // _BLOCK
    try:
        fs = vfs.VfsLfs2(ReadOnly(f, blocks))
    except OSError as e:
        print(json.dumps({"error": "mount: %s" % e}))
        sys.exit(1)
    dirs = []
    files = {}
    walk(fs, "", dirs, files, memoryview(bytearray(4096)))
    st = fs.statvfs("/")
    print(json.dumps({"blocks": st[2], "free": st[3], "dirs": dirs, "files": files}))


main()
