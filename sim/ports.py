# Which MicroPython port the simulated board is: env MPFLEET_PORT (esp8266,
# the default; esp32; unix) and MPFLEET_PORT_VERSION ("1.28", 1.20 to 1.28).
# machine.py reads the profile from here; the facts and their sources are in
# the project's PORTS.md (section numbers below).
#
# Importing this also makes `import sys` return a stand-in whose `platform`
# and `implementation` are the simulated port's (everything else is the real
# sys), so code that checks sys.implementation sees the board it runs on.
import os
import sys as _sys

name = os.getenv("MPFLEET_PORT") or "esp8266"
if name not in ("esp8266", "esp32", "unix"):
    raise SystemExit("MPFLEET_PORT: esp8266, esp32 or unix, not %r" % name)
version = tuple(int(p) for p in (os.getenv("MPFLEET_PORT_VERSION") or "1.28").split("."))[:2]
esp8266 = name == "esp8266"
esp32 = name == "esp32"

# machine.WDT, machine.Timer and machine.reset_cause exist (unix has none, §1).
has_wdt = not (name == "unix")
# RTC().memory() bytes (§3). unix has no RTC; the runtime keeps its bootflags
# there, so the sim gives it ESP32's 2048.
rtc_size = 492 if esp8266 else 2048
# ESP32 up to 1.21 keeps RTC memory only across deep sleep (§3).
rtc_cleared_by_reset = esp32 and version <= (1, 21)
# Soft callbacks waiting to run; more are dropped (§2).
sched_depth = 8 if esp32 else 4
# reset_cause() values for how the harness (re)started this boot: env
# MPFLEET_RESET_CAUSE power (or unset), reset (machine.reset()), watchdog (§4).
# ESP8266: a WDT reset gives 3, which has no constant.
if esp32:
    causes = {"power": 1, "reset": 2, "watchdog": 3}
    cause_names = {"PWRON_RESET": 1, "HARD_RESET": 2, "WDT_RESET": 3,
                   "DEEPSLEEP_RESET": 4, "SOFT_RESET": 5}
else:
    causes = {"power": 0, "reset": 4, "watchdog": 3}
    cause_names = {"PWRON_RESET": 0, "WDT_RESET": 1, "SOFT_RESET": 4,
                   "DEEPSLEEP_RESET": 5, "HARD_RESET": 6}
cause = os.getenv("MPFLEET_RESET_CAUSE") or "power"


class _Implementation:
    # sys.implementation as the port reports it (§8 for _mpy).
    name = "micropython"

    def __init__(self):
        sub = 1 if version <= (1, 21) else 2 if version == (1, 22) else 3
        arch = 9 if esp8266 else 10 if esp32 else 2
        self.version = version + (0, "")
        self._mpy = 6 | (sub | arch << 2) << 8
        self._machine = _sys.implementation._machine if name == "unix" else (
            "ESP module with ESP8266" if esp8266 else "Generic ESP32 module with ESP32")


class _Sys:
    def __init__(self):
        self.platform = "linux" if name == "unix" else name
        self.implementation = _Implementation()

    def __getattr__(self, attr):
        return getattr(_sys, attr)


_sys.modules["sys"] = _Sys()


class _Absent:
    # A module the simulated version does not have: `from m import x` raises
    # ImportError, as on the board (a plain `import m` does not: use `from`).
    pass


if version < (1, 21):  # deflate came in 1.21 (§9)
    _sys.modules["deflate"] = _Absent()
