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


_wdt = [None]  # the watchdog, once started
_fed_by_timer = [False]  # a periodic Timer feeds it (see Timer)
_feeds = [0]


class WDT:
    def __init__(self, id=0, timeout=5000):
        self._timeout = timeout
        _wdt[0] = self
        self.feed()

    def feed(self):
        _feeds[0] += 1
        if _wdt_path:
            import time

            # Fed by a timer: it never expires while the timer runs.
            ms = 10**9 if _fed_by_timer[0] else self._timeout
            # Write and rename: the harness never reads a half-written deadline.
            with host.open(_wdt_path + ".new", "w") as f:
                f.write("%d\n" % (time.time_ns() // 1000000 + ms))
            host.rename(_wdt_path + ".new", _wdt_path)


class Timer:
    # A hardware timer, simulated without threads (the unix port's threads
    # crash this embedded interpreter at exit). A periodic timer whose callback
    # feeds the watchdog keeps it fed for as long as the timer runs, as a real
    # one does between bytecodes; any other callback runs once, at init.
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id=-1, **kwargs):
        self._feeding = False
        if kwargs:
            self.init(**kwargs)

    def init(self, mode=1, period=-1, callback=None, freq=None):
        self.deinit()
        fed = _feeds[0]
        if callback:
            callback(self)
        if mode == 1 and _feeds[0] != fed and _wdt[0]:
            self._feeding = _fed_by_timer[0] = True
            _wdt[0].feed()

    def deinit(self):
        if self._feeding:
            self._feeding = _fed_by_timer[0] = False
            _wdt[0].feed()
