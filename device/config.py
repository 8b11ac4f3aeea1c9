# mpfleet config: the bootflags, the running configuration and the watchdog, for
# your code. Talks to no server.
#
#   import config
#   if config.get('update_failed'): blink()
#   config.set('reboots', 0)               # healthy: stop counting boots
#   config.set('update'); machine.reset()  # check for an update now
#
# Bootflags live in RTC memory as one small JSON object: they survive
# machine.reset(), watchdog resets and deep sleep (MicroPython 1.22+), and are
# lost on power-off. An ESP8266 holds 492 bytes: keep values short.
#
# The first stage (mpfleet.py) picks the configuration and calls init(); then
# `primary` or `alternate` is True for the one running, `generation` and `app`
# describe it, and versions() gives {name: version} (read from flash).
#
# Healthy. set('reboots', 0) also *confirms* the running configuration: it is
# written down as good, and only a confirmed configuration ever becomes the
# alternate (the one the board falls back to).
#
# The watchdog. The first stage starts machine.WDT(timeout=5000), the one
# timeout every port accepts (an ESP8266 resets 1.6-3.2 s after the last feed
# whatever it is given), and a periodic machine.Timer that feeds it until the
# boot deadline: /ota.json "watchdog" seconds (30 by default; 0: no watchdog),
# before it imports this module (mpfleet.py's Watch holds both).
# A boot that has not said it is healthy by then stops being fed and resets,
# so a new version that hangs is rolled back like one that raises. Once your
# app is healthy the timer feeds the watchdog for as long as the board runs,
# unless you take it over:
#   config.feed()   # in your main loop: the first call stops the background
#                   # feeding, so a hang anywhere in your app resets the board
# Background feeding runs between bytecodes and during waits: after the app
# said it is healthy it does not catch a Python loop that never ends; feed()
# does.
import json

import machine
from micropython import const

_RTC_SIZE = const(492)
_OTA = "/ota/"

_w = None  # mpfleet.py's Watch (.wdt, .timer, .until), None without a watchdog
primary = False
alternate = False
confirmed = False
generation = None
app = None


def init(which, head, watch=None):
    global primary, alternate, confirmed, generation, app, _w
    _w = watch
    primary = which == "primary"
    alternate = which == "alternate"
    confirmed = alternate or head.get("confirmed", False)
    generation = head["generation"]
    app = head["app"]


def versions():
    # {name: version} of the running configuration.
    found = {}
    with open(_OTA + ("primary" if primary else "alternate") + ".json") as f:
        for line in f:  # "name":["version","file","sha256"],
            if line.startswith('"'):
                parts = line.split('"')
                found[parts[1]] = parts[3]
    return found


def bootflags():
    try:
        flags = json.loads(machine.RTC().memory())
    except Exception:  # empty after power-on
        return {}
    return flags if isinstance(flags, dict) else {}  # an app may use RTC memory too


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


def clear(flag):
    flags = bootflags()
    if flags.pop(flag, None) is not None:
        _save(flags)


def feed():
    # Feed the watchdog; you feed it from now on (at least every 1.5 s).
    if _w:
        if _w.timer:
            _w.timer.deinit()
            _w.timer = None
        _w.wdt.feed()


def _healthy():
    # Also confirms the primary: /ota/confirmed.json holds the generation number of
    # the last primary whose app said it is healthy (installer.py reads it and
    # removes it before it writes a new primary). Written only when it says
    # another; a write cut short leaves it unconfirmed, and the next healthy
    # boot writes it again.
    global confirmed
    if _w:
        _w.until = None  # the timer feeds it for as long as the board runs
    if primary and not confirmed:
        confirmed = True
        g = str(generation)
        try:
            try:
                with open(_OTA + "confirmed.json") as f:
                    if f.read() == g:
                        return
            except OSError:  # none yet
                pass
            with open(_OTA + "confirmed.json", "w") as f:
                f.write(g)
        except OSError as e:  # a full flash: stays unconfirmed, the app runs on
            print("mpfleet: cannot confirm:", e)
