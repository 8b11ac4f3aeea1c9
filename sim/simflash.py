# The simulated board's flash: a littlefs2 block device backed by a host file.
import os

_BLOCK = 4096


class Flash:
    # A littlefs2 block device backed by a host file. Counts block writes and,
    # if asked, loses power right after the k-th one.
    def __init__(self, f, blocks, cut_after):
        self.f = f
        self.blocks = blocks
        self.writes = 0
        self.cut_after = cut_after

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * _BLOCK + offset)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, offset=0):
        self.f.seek(block * _BLOCK + offset)
        self.f.write(buf)
        self.writes += 1
        if self.writes == self.cut_after:
            # Power cut: SIGKILL from a child shell, so no finally block, no
            # atexit, nothing in this process runs after the write.
            os.system("kill -9 $PPID")

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return _BLOCK
        if op == 6:  # erase: littlefs overwrites whole blocks, nothing to do
            return 0
        return None
