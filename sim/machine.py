# Simulated board hardware: the unix port's machine module plus what mpfleet
# uses on a real board. On MICROPYPATH this file replaces the built-in.
#   RTC().memory()  kept in the file named by env MPFLEET_RTC (the harness
#                   deletes it to simulate power-off)
#   reset()         exits the process with code 42; the harness restarts it
#   WDT(timeout=ms) writes its deadline (Unix time in ms) to env MPFLEET_WDT at
#                   creation and at every feed(); the harness kills a board
#                   whose deadline passes
#   unique_id()     the MAC from env MPFLEET_MAC
#   Timer(id)       periodic or one-shot; callbacks run between bytecodes
import os
import sys

import vfs
from umachine import *  # noqa: F401,F403

_RTC_SIZE = 492  # an ESP8266's RTC memory: the smallest board we promise to fit

# The board's flash gets mounted at / later; host files go through this.
host = vfs.VfsPosix()


def _host_path(name):
    path = os.getenv(name)
    if path and not path.startswith("/"):
        path = os.getcwd() + "/" + path
    return path


_rtc_path = _host_path("MPFLEET_RTC")
_wdt_path = _host_path("MPFLEET_WDT")


class RTC:
    def __init__(self, id=0):
        pass

    def memory(self, data=None):
        if data is None:
            try:
                with host.open(_rtc_path, "rb") as f:
                    return f.read()
            except (OSError, TypeError):  # no file yet: power-on
                return b""
        if len(data) > _RTC_SIZE:
            raise ValueError("RTC memory holds %d bytes" % _RTC_SIZE)
        if _rtc_path:
            with host.open(_rtc_path, "wb") as f:
                f.write(data)


def reset():
    sys.stdout.flush() if hasattr(sys.stdout, "flush") else None
    raise SystemExit(42)


def unique_id():
    return bytes.fromhex(os.getenv("MPFLEET_MAC") or "020000000001")


class WDT:
    def __init__(self, id=0, timeout=5000):
        self._timeout = timeout
        self.feed()

    def feed(self):
        if _wdt_path:
            import time

            # Write and rename: the harness never reads a half-written deadline.
            with host.open(_wdt_path + ".new", "w") as f:
                f.write("%d\n" % (time.time_ns() // 1000000 + self._timeout))
            host.rename(_wdt_path + ".new", _wdt_path)


class Timer:
    # A periodic timer whose callback runs in the main thread between
    # bytecodes, as soft timers do on a board: a thread sleeps, then
    # micropython.schedule()s it (the thread allocates nothing).
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kwargs):
        self._gen = 0
        self._pending = False
        self._callback = None
        self._mode = 1
        self._fire_bound = self._fire
        if kwargs:
            self.init(**kwargs)

    def init(self, mode=1, period=-1, callback=None, freq=None):
        import _thread

        if freq:
            period = 1000 // freq
        self._gen += 1
        self._callback = callback
        self._mode = mode
        _thread.start_new_thread(self._run, (self._gen, period))

    def _run(self, gen, period):
        import time

        import micropython

        while self._gen == gen:
            time.sleep_ms(period)
            if self._gen == gen and not self._pending:
                self._pending = True
                micropython.schedule(self._fire_bound, gen)
            if self._mode == 0:
                break

    def _fire(self, gen):
        self._pending = False
        if gen == self._gen and self._callback:
            self._callback(self)

    def deinit(self):
        self._gen += 1
