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
import json

import machine
from micropython import const

_RTC_SIZE = const(492)

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


def clear(flag):
    flags = bootflags()
    if flag in flags:
        del flags[flag]
        _save(flags)
