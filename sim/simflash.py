# The simulated board's flash: a littlefs2 block device backed by a host file.
#
# Like an ESP32's flash partition: littlefs programs (writeblocks, up to 128
# bytes with MicroPython's default cache) and erases whole 4 KiB blocks
# (ioctl 6), which sets every byte to 0xff. Both are "writes": each is counted,
# and each is a point where power can fail.
#
# A power cut at write K (MPFLEET_CUT_AFTER_WRITES=K): writes 1..K-1 are
# complete, write K is torn and the process dies inside it (SIGKILL: no
# finally, no atexit, nothing of this process runs after it). What reaches the
# flash of write K is set by MPFLEET_CUT_TEAR:
#   half  (default) its first half; the rest of the range keeps what it held
#   lost  none of it (the same state as a clean stop after write K-1)
import os

_BLOCK = 4096
_FF = b"\xff" * 256  # an erase writes this 16 times: a whole erased block would cost 4 KB of heap


class Flash:
    def __init__(self, f, blocks, cut_at, tear="half"):
        self.f = f
        self.blocks = blocks
        self.writes = 0
        self.cut_at = cut_at
        self.tear = tear

    def readblocks(self, block, buf, offset=0):
        self.f.seek(block * _BLOCK + offset)
        self.f.readinto(buf)

    def _write(self, pos, data):
        # data None: erase the block at pos.
        self.f.seek(pos)
        self.writes += 1
        size = _BLOCK if data is None else len(data)
        if self.writes == self.cut_at:
            if self.tear != "lost":
                self._put(data, size // 2)
            # The host file is unbuffered: what was written is in the file.
            os.system("kill -9 $PPID")
            while True:  # never return into littlefs
                pass
        self._put(data, size)

    def _put(self, data, size):
        if data is None:
            for _ in range(size // len(_FF)):
                self.f.write(_FF)
        else:
            self.f.write(data if size == len(data) else data[:size])

    def writeblocks(self, block, buf, offset=0):
        self._write(block * _BLOCK + offset, buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return self.blocks
        if op == 5:  # block size
            return _BLOCK
        if op == 6:  # erase one block
            self._write(arg * _BLOCK, None)
            return 0
        return None
