# Simulated board hardware: the unix port's machine module plus what mpfleet
# uses on a real board, as the port in env MPFLEET_PORT has it (ports.py; the
# facts: the project's PORTS.md). On MICROPYPATH this file replaces the built-in.
#   RTC().memory()  kept in the file named by env MPFLEET_RTC (the harness
#                   deletes it to simulate power-off); the port's size limit
#   reset()         exits the process with code 42; the harness restarts it
#                   (inside a Timer callback: SIGTERM, see _finish)
#   reset_cause()   how the harness says this boot started (ports.cause)
#   WDT(...)        the port's arguments; writes its deadline (Unix time in ms)
#                   to env MPFLEET_WDT at creation and at every feed(); the
#                   harness kills a board whose deadline passes
#   Timer(...)      the port's arguments; callbacks run in the main thread,
#                   between bytecodes and during waits (see _ticker)
#   unique_id()     the MAC from env MPFLEET_MAC
# The unix profile has no WDT, Timer or reset_cause, as on the unix port.
import _thread
import os
import sys

import micropython
import ports
import utime
import vfs
from micropython import const
from umachine import *  # noqa: F401,F403

# The board's flash gets mounted at / later; host files go through this.
host = vfs.VfsPosix()


def _host_path(name):
    path = os.getenv(name)
    if path and not path.startswith("/"):
        path = os.getcwd() + "/" + path
    return path


_rtc_path = _host_path("MPFLEET_RTC")
_wdt_path = _host_path("MPFLEET_WDT")
_flash = None  # the board's simflash.Flash, set by board.py: its writes are reported at exit

if ports.rtc_cleared_by_reset and ports.cause != "power" and _rtc_path:
    try:
        host.remove(_rtc_path)
    except OSError:
        pass


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
        if len(data) > ports.rtc_size:
            raise ValueError("buffer too long")
        if _rtc_path:
            with host.open(_rtc_path, "wb") as f:
                f.write(data)


def reset():
    sys.stdout.flush() if hasattr(sys.stdout, "flush") else None
    raise SystemExit(42)


def unique_id():
    return bytes.fromhex(os.getenv("MPFLEET_MAC") or "020000000001")


def reset_cause():
    return ports.causes[ports.cause]


for _name, _value in ports.cause_names.items():
    globals()[_name] = _value

_wdt_ms = [0]  # the watchdog's real timeout (ms), shared by every WDT object
_WDT_DIGITS = const(16)
_wdt_buf = bytearray(b"0" * _WDT_DIGITS + b" " + b"0" * _WDT_DIGITS + b"\n")  # see feed()
_wdt_file = []  # the open MPFLEET_WDT file (see the end)
_clock = (utime.time_ns() // 1000000, utime.ticks_ms())  # Unix time in ms at ticks_ms()


def _wdt_timeout(args, kw):
    # The real timeout of WDT(*args, **kw) in ms, or the port's error (§1).
    if ports.esp8266 and ports.version <= (1, 21):
        if kw:
            raise TypeError("function doesn't take keyword arguments")
        if len(args) > 1:
            raise TypeError("function expected at most 1 arguments, got %d" % len(args))
        wdt_id, timeout = (args or (0,))[0], 5000
    else:

        def parse(id=0, timeout=5000):
            return id, timeout

        wdt_id, timeout = parse(*args, **kw)
    if wdt_id != 0:
        raise ValueError("WDT(%d) doesn't exist" % wdt_id)
    if ports.esp8266:
        if timeout != 5000:
            raise ValueError("timeout must be 5000 on esp8266")
        return 1600  # the soft WDT fires 1.6 to 3.2 s after the last feed: the worst case
    if ports.version == (1, 20):
        if timeout < 1000:
            raise ValueError("WDT timeout too short")
        return timeout // 1000 * 1000
    if timeout <= 0:
        raise ValueError("WDT timeout too short")
    return timeout


class WDT:
    # One watchdog per board: another WDT(...) reconfigures it (ESP32) and feeds it. No deinit.
    def __init__(self, *args, **kw):
        _wdt_ms[0] = _wdt_timeout(args, kw)
        self.feed()

    def feed(self):
        # A real feed() takes nothing from the heap; neither does this one, since it
        # runs from a Timer callback at moments that vary from run to run (an
        # allocation there would make the heap a boot needs vary too: see _service).
        # One file, opened at start-up (see the end), and one buffer: the deadline
        # written in place, twice, so that the harness can tell a write it read
        # half-done (it takes the deadline only when both copies agree). The clock is
        # ticks_ms from a Unix time taken at start-up: time_ns() allocates a big int.
        if _wdt_file:
            _write_deadline(_clock[0] + utime.ticks_diff(utime.ticks_ms(), _clock[1]) + _wdt_ms[0])


def _write_deadline(ms):
    # Apart from feed(), so that each frame is small enough for the C stack.
    i = _WDT_DIGITS - 1
    while i >= 0:
        _wdt_buf[i] = 48 + ms % 10
        _wdt_buf[_WDT_DIGITS + 1 + i] = _wdt_buf[i]
        ms //= 10
        i -= 1
    _wdt_file[0].seek(0)
    _wdt_file[0].write(_wdt_buf)


# Timers. A real port's soft timer puts its callback in the scheduler's queue
# (depth ports.sched_depth, further callbacks are dropped) and the VM runs it
# between bytecodes, also while sleeping or waiting on a socket. Here a thread
# (_ticker) asks the main thread every _TICK ms, with micropython.schedule, to
# run _service, which calls the callbacks that are due. The main thread runs
# it between bytecodes and inside the unix port's time.sleep_ms; time.sleep
# (time.py) waits with sleep_ms, and socket waits (socket.py) poll in slices of
# at most 10 ms, so that it runs during them too.
_TICK = const(10)
_timers = []  # armed Timers
_hw = {}  # ESP32: hardware timer number -> the Timer that has it
_flags = bytearray(2)  # [0]: the ticker must stop; [1]: _service is queued
_ticker_done = []  # a lock the ticker releases when it stops


def _ticker(flags, done, schedule, service, sleep_ms):
    # Touches nothing but its arguments: the unix port runs threads without a GIL.
    try:
        while not flags[0]:
            sleep_ms(_TICK)
            if not flags[1]:
                flags[1] = 1
                try:
                    schedule(service, None)
                except:  # noqa: E722 -- queue full (the app schedules too): next tick
                    flags[1] = 0
    finally:
        done.release()


def _service(_):
    # Runs the callbacks that are due. It runs at moments that vary from run to run, so
    # it takes nothing from the board's heap (see WDT.feed): an allocation then, its
    # own frame included (MicroPython puts a frame over 11 words on the heap), could
    # start a collection at that moment and make the heap a boot needs vary too. Hence
    # small functions, and the heap locked while they run, which puts frames on the C
    # stack; a callback runs with the heap as the board has it.
    _flags[1] = 0
    micropython.heap_lock()
    try:
        _due(utime.ticks_ms())
    finally:
        micropython.heap_unlock()


def _due(now):
    room = ports.sched_depth  # fires that piled up beyond it are dropped
    # By index: a for loop over the list would allocate its iterator. A callback may
    # deinit a timer (this one or another) or arm one (appended: not due before its period).
    i = 0
    while i < len(_timers):
        t = _timers[i]
        if utime.ticks_diff(now, t._next) < 0:
            i += 1
            continue
        fires = 1
        if t._mode == Timer.PERIODIC:
            fires += utime.ticks_diff(now, t._next) // t._period
            t._next = utime.ticks_add(t._next, fires * t._period)
        else:
            _timers.remove(t)
        while fires and room:
            fires -= 1
            room -= 1
            _call(t)
        if i < len(_timers) and _timers[i] is t:  # still armed, in its place
            i += 1


def _call(t):
    micropython.heap_unlock()
    try:
        t._callback(t)
    except SystemExit as e:
        if e.args and e.args[0] == 42:  # machine.reset(): at once, as on a board
            _finish(42, now=True)
        sys.print_exception(e)
    except Exception as e:  # noqa: BLE001 -- printed, as the port's scheduler does
        sys.print_exception(e)
    finally:
        micropython.heap_lock()


def _stop_ticker():
    if _ticker_done:
        _flags[0] = 1
        _ticker_done[0].acquire()
        # The thread has left its loop; give it time to leave the interpreter too, which
        # must not be torn down under it.
        utime.sleep_ms(5)


def _running():
    # Whether anything still runs when main.py returns: a watchdog or an armed Timer.
    return bool(_wdt_ms[0] or _timers)


def _finish(status, now=False):
    # Ends the boot: stops the ticker, reports the flash writes, exits with status. From a
    # callback (now=True), where the scheduler would catch SystemExit, the process ends by
    # SIGTERM, which the harness takes as machine.reset().
    _stop_ticker()
    if _flash and os.getenv("MPFLEET_COUNT_WRITES"):
        sys.stderr.write("writes=%d\n" % _flash.writes)
    if now:
        os.system("kill -TERM $PPID")
        while True:
            pass
    sys.exit(status)


class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, *args, **kw):
        # ESP8266: Timer(any) only, then init(). ESP32 up to 1.28: a hardware timer 0-3,
        # keywords go to init() (§2).
        self._hw = None
        if ports.esp8266:
            if kw:
                raise TypeError("function doesn't take keyword arguments")
            if len(args) != 1:
                raise TypeError("function takes 1 positional arguments but %d were given" % len(args))
            return
        if not args:
            raise TypeError("function missing 1 required positional arguments")
        if ports.version >= (1, 25) and args[0] not in (0, 1, 2, 3):
            raise ValueError("invalid Timer number")
        self._hw = args[0] & 3
        if len(args) > 1 or kw:
            self.init(*args[1:], **kw)

    def init(self, *, mode=1, callback=None, period=-1, tick_hz=1000, freq=None, **kw):
        for k in kw:
            if k != "hard" or ports.version < (1, 27):
                raise TypeError("extra keyword arguments given")
            if ports.esp32 and kw[k]:
                raise ValueError("hard Timer not supported")
        self.deinit()
        if freq:
            period, tick_hz = 1000000 // freq, 1000000
        if callback is None or period < 0:
            return  # never fires
        self._mode = mode
        self._callback = callback
        self._period = max(period * 1000 // tick_hz, 1)
        self._next = utime.ticks_add(utime.ticks_ms(), self._period)
        if self._hw is not None:
            if _hw.get(self._hw) not in (None, self):
                _hw[self._hw].deinit()
            _hw[self._hw] = self
        _timers.append(self)

    def deinit(self):
        if self in _timers:
            _timers.remove(self)


if not ports.has_wdt:  # unix
    del WDT, Timer, reset_cause
    for _name in ports.cause_names:
        del globals()[_name]
else:
    # What a real port keeps outside the Python heap (its timer service, its watchdog)
    # is set up here, at start-up, so that its cost is the simulator's (the floor), not
    # that of the code that first arms a Timer or feeds a WDT.
    if _wdt_path:
        _wdt_file.append(host.open(_wdt_path, "wb"))  # empty: no deadline yet
    _done = _thread.allocate_lock()
    _done.acquire()
    _ticker_done.append(_done)
    _thread.start_new_thread(_ticker, (_flags, _done, micropython.schedule, _service, utime.sleep_ms))
    del _done
