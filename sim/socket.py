# socket, with waits that let Timer callbacks run, as on a board: the unix
# port's blocking calls wait in C, where no callback runs. Each socket here is
# non-blocking underneath and waits with select.poll in slices of at most
# 10 ms (machine.py runs the callbacks between them). What a board sees:
#   settimeout(t)  t seconds per call, restarted whenever data moves; expiry
#                  raises OSError(ETIMEDOUT) (110, as on ESP8266); 0: EAGAIN
#   readinto(buf[, n]), read(n)  keep reading until n bytes or EOF (py/stream.c)
#   readline([size]), recv, write, send, sendall, connect, accept, close; anything
#   else goes to the unix port's socket (json.load reads through readinto)
# A wait takes nothing from the board's heap, as a real port's wait in C does not:
# how many waits a call makes depends on timing, and an allocation per wait would
# make the heap a boot needs vary from run to run (see machine.py's WDT.feed).
import errno
import io
import select
import usocket
import utime
from micropython import const
from usocket import *  # noqa: F401,F403

_SLICE = const(10)
_IN = const(1)  # select.POLLIN
_OUT = const(4)  # select.POLLOUT


def _slice(end):
    # How long the next slice of a wait polls; raises once `end` (ticks_ms) has passed.
    if end is None:
        return _SLICE
    ms = utime.ticks_diff(end, utime.ticks_ms())
    if ms <= 0:
        raise OSError(errno.ETIMEDOUT)
    return min(ms, _SLICE)


class socket(io.IOBase):
    def __init__(self, *args, _native=None):
        self._s = _native or usocket.socket(*args)
        self._s.setblocking(False)
        self._timeout = None
        self._poll = select.poll()
        self._poll.register(self._s, _IN)
        self._poll.ipoll(0)  # allocates the tuple every ipoll reuses, now rather than mid-wait

    def __getattr__(self, name):
        return getattr(self._s, name)

    def settimeout(self, t):
        self._timeout = t

    def setblocking(self, flag):
        self._timeout = None if flag else 0

    def _end(self):
        t = self._timeout
        return None if t is None else utime.ticks_add(utime.ticks_ms(), int(t * 1000))

    def _wait(self, event, end):
        p = self._poll
        p.modify(self._s, event)
        if self._timeout == 0:  # non-blocking: ready now, or EAGAIN
            if next(p.ipoll(0), None):
                return
            raise OSError(errno.EAGAIN)
        while not next(p.ipoll(_slice(end)), None):  # poll() would allocate a list
            pass

    def connect(self, addr):
        try:
            self._s.connect(addr)
            return
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        self._wait(_OUT, self._end())
        try:
            self._s.connect(addr)  # the outcome: ECONNREFUSED etc.
        except OSError as e:
            if e.errno != getattr(errno, "EISCONN", 106):  # 106: Linux; not in the port's errno
                raise

    def accept(self):
        self._wait(_IN, self._end())
        s, addr = self._s.accept()
        return socket(_native=s), addr

    def recv(self, n):
        # Waits first: the port's recv allocates its buffer, and an exception, even
        # when there is nothing to read (see readline).
        end = self._end()
        while True:
            self._wait(_IN, end)
            try:
                return self._s.recv(n)
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    raise

    def readinto(self, buf, n=None):
        mv = memoryview(buf)
        n = len(mv) if n is None else n
        got = 0
        end = self._end()
        part = mv[:n]  # a new slice only when data moved, not per wait
        while got < n:
            r = self._s.readinto(part)  # None: nothing there yet
            if r is None:
                self._wait(_IN, end)
            elif r == 0:
                break
            else:
                got += r
                part = mv[got:n]
                end = self._end()
        return got

    def read(self, n=-1):
        if n >= 0:
            buf = bytearray(n)
            return bytes(memoryview(buf)[: self.readinto(buf)])
        data = b""
        while True:
            part = self.recv(1024)
            if not part:
                return data
            data += part

    def readline(self, size=-1):
        line = b""
        end = self._end()
        while not line.endswith(b"\n") and len(line) != size:
            # Waits first: the port's readline allocates its line even when there is
            # nothing to read (and frees it), so a call per wait would make the heap a
            # boot needs depend on when the bytes arrive. Then a part of the line, or
            # None: nothing there after all.
            self._wait(_IN, end)
            part = self._s.readline(size - len(line) if size >= 0 else -1)
            if part is None:
                continue
            elif not part:
                break
            else:
                line += part
                end = self._end()
        return line

    def write(self, data):
        mv = memoryview(data)
        sent = 0
        end = self._end()
        part = mv
        while sent < len(mv):
            r = self._s.write(part)  # None: the send buffer is full
            if r is None:
                self._wait(_OUT, end)
            else:
                sent += r
                part = mv[sent:]
                end = self._end()
        return sent

    send = sendall = write

    def close(self):
        self._s.close()
