# mpfleet config: the bootflags and the active configuration, for your code.
# Talks to no server.
#
#   import config
#   if config.get('update_failed'): blink()
#   config.set('reboots', 0)             # healthy: stop counting boots
#   config.set('update'); machine.reset()  # check for an update now
#
# Bootflags live in RTC memory as one small JSON object: they survive
# machine.reset() and deep sleep, and are lost on power-off. ESP8266 RTC memory
# holds 492 bytes, so keep values short.
#
# main.py picks the configuration and calls init(); then `primary` or
# `alternate` is True for the one running, and `generation`, `app` and
# `modules` ({name: version}) describe it.
#
# The watchdog. main.py starts machine.WDT (on ports that have one: ESP32,
# ESP8266) before the updater and your app; it resets a board that hangs, so a
# new version that loops forever is rolled back like one that raises. Its
# timeout is /ota.json "watchdog" (seconds, 30 by default; bootstrap.py's
# WATCHDOG; 0: no watchdog). Once started it cannot be stopped, so:
#   config.set('reboots', 0)  # healthy: from now on the board feeds the
#                             # watchdog in the background (machine.Timer)
#   config.feed()             # or feed it yourself, in your main loop: the
#                             # first call stops the background feeding, so a
#                             # hang anywhere in your app resets the board
# Background feeding runs between bytecodes, so it does not catch a Python
# loop that never ends after the app said it is healthy; feed() does.
# On an ESP8266 the timeout is fixed by the port (a few seconds): feed often.
import json

import machine
from micropython import const

_RTC_SIZE = const(492)

_wdt = None  # main.py's machine.WDT, None if the port has none
_timer = None  # background feeding
_fed = False  # the app feeds the watchdog itself
primary = False
alternate = False
generation = None
app = None
modules = {}


def init(which, configuration):
    global primary, alternate, generation, app, modules
    primary = which == "primary"
    alternate = which == "alternate"
    generation = configuration["generation"]
    app = configuration["app"]
    modules = configuration["modules"]


def bootflags():
    try:
        return json.loads(machine.RTC().memory())
    except Exception:  # empty after power-on
        return {}


def _save(flags):
    data = json.dumps(flags)
    if len(data) > _RTC_SIZE:
        raise ValueError("bootflags too big for RTC memory")
    machine.RTC().memory(data)


def get(flag):
    return bootflags().get(flag)


def set(flag, value=True):
    flags = bootflags()
    flags[flag] = value
    _save(flags)
    if flag == "reboots" and not value:
        _healthy()


def feed():
    # Feed the watchdog; you feed it from now on (at least every timeout).
    global _fed
    _fed = True
    _healthy()


def _healthy(timer=None):
    # Feed the watchdog; unless the app feeds it itself, keep feeding it in
    # the background (a virtual timer on ESP8266, hardware timer 0 on ESP32).
    global _timer
    if not _wdt:
        return
    _wdt.feed()
    if _fed and _timer:
        _timer.deinit()
        _timer = None
    for t in () if _fed or _timer else (-1, 0):
        try:
            _timer = machine.Timer(t)
            _timer.init(period=1000, callback=_healthy)
            return
        except Exception:
            _timer = None
