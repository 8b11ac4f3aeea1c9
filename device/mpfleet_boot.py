# mpfleet first stage, the part that decides: installed once (by the
# bootstrap) as /ota/mpfleet_boot.mpy (precompiled; .py on a port that cannot
# load .mpy), never replaced over the air. mpfleet.py imports it, calls boot(),
# unloads it, and then runs the updater and the app.
#
# Every boot:
#  1. load the bootflags from RTC memory and add one to `reboots`;
#  2. pick the configuration: /ota/primary.json, or /ota/alternate.json (the
#     last *confirmed* one) when primary is missing, was rolled back from, or
#     loops (`reboots` > 4: primary's generation goes into /ota/bad.json and
#     `reboots` starts again for the alternate);
#  3. start the watchdog (see config.py), before anything versioned runs;
#  4. say whether the updater must run: the `update` flag is set, or the board
#     is stuck (the configuration it runs loops too and there is nothing to
#     fall back to). A stuck board asks the server for a fix at boots 5, 10,
#     20, 40, 80 and then every 64 boots, and installs the first new
#     generation it gets. Or what the last boot asked for (the `next` flag,
#     [module, function, arguments...], used once): an update is three boots,
#     the updater's check, the installer's downloads, the updater's report;
#  5. mpfleet.py then imports the application module the configuration names.
# An exception out of any of it is kept short in the bootflags (`error`) and
# the board resets, so `reboots` climbs.
#
# failed(): the updater (or the installer) could not be imported or raised.
# The generation is blamed (it rolls back) only when that was a code error (not
# MemoryError, not OSError) in an updater this generation changed (any of
# updater, reporter, installer, updater_io, updater_trust); otherwise the update is
# retried twice after a reset (a fresh heap), then left until the next
# request, with `update_failed` set.
#
# Configurations are JSON, one module per line, so no board ever holds a big
# one in memory:
#   {"generation":7,"app":"app","confirmed":true,"modules":{
#   "app":["1","1-9f86d081884c.mpy","9f86d081884c7d65..."],
#   ...
#   }}
# Each module: its version, the installed file /ota/m/{name}/{file} (named by
# the version and the SHA-256 of its bytes) and that SHA-256.
#
# The importer (mpfleet.py's Importer) is fixed too, not in the versioned
# `config`: something fixed has to import `config` itself.
import json
import os
import sys

import machine
from micropython import const

try:
    from vfs import mount
except ImportError:  # MicroPython < 1.23
    from os import mount

_MAX_REBOOTS = const(4)
_KEEP_BAD = const(8)
_CHECK_EVERY = const(64)
_RETRIES = const(2)
_OTA = "/ota/"
_IMPORTER = "/ota/importer"

def _flags():
    try:
        flags = json.loads(machine.RTC().memory())
    except Exception:  # empty after power-on
        flags = None
    return flags if isinstance(flags, dict) else {}  # an app may use RTC memory too


def _save(flags):
    machine.RTC().memory(json.dumps(flags))


def _head(name):
    # The first line of a configuration: generation, app, confirmed.
    try:
        with open(_OTA + name + ".json") as f:
            head = json.loads(f.readline() + "}}")
        return head if isinstance(head.get("generation"), int) else None
    except (OSError, ValueError, AttributeError):
        return None


def _file(name, module):
    # The file configuration `name` installs for `module`, or None.
    key = '"%s":' % module
    with open(_OTA + name + ".json") as f:
        for line in f:  # "name":["version","file","sha256"],
            if line.startswith(key):
                return line.split('"')[5]


def _bad():
    try:
        with open(_OTA + "bad.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return []


def _add_bad(generation):
    # /ota/bad.json: generations rolled back from; written whole, then renamed.
    bad = (_bad() + [generation])[-_KEEP_BAD:]
    with open(_OTA + "tmp/bad.json", "w") as f:
        json.dump(bad, f)
    try:
        os.rename(_OTA + "tmp/bad.json", _OTA + "bad.json")
    except OSError:  # FAT will not rename over an existing file
        os.remove(_OTA + "bad.json")
        os.rename(_OTA + "tmp/bad.json", _OTA + "bad.json")


def _empty_tmp():
    # mkdir first: it makes littlefs finish what a power cut interrupted (a
    # rename half done hides files from listdir until the next write), and
    # makes /ota/tmp if it is missing. Then each file on its own.
    try:
        os.mkdir(_OTA + "tmp")
    except OSError:  # it exists
        pass
    try:
        names = os.listdir(_OTA + "tmp")
    except OSError:
        return
    for name in names:
        try:
            os.remove(_OTA + "tmp/" + name)
        except OSError:
            pass


def _choose(flags):
    # Returns (which, head, generation rolled back from or None).
    p = _head("primary")
    a = _head("alternate")
    if a and p and a["generation"] == p["generation"]:
        a = None
    if p is None:
        return ("alternate", a, None) if a else (None, None, None)
    if a is None:
        return "primary", p, None
    if p["generation"] in _bad():
        return "alternate", a, None
    if flags["reboots"] > _MAX_REBOOTS:
        _add_bad(p["generation"])
        flags["reboots"] = 1  # the alternate's first boot
        return "alternate", a, p["generation"]
    return "primary", p, None


def _settings():
    try:
        with open("/ota.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _blamed(e, which):
    # Did the updater of this generation fail by its own code?
    if which != "primary" or isinstance(e, (MemoryError, OSError)):
        return False
    try:
        for m in ("updater", "reporter", "installer", "updater_io", "updater_trust"):
            if _file("alternate", m) != _file("primary", m):
                return True
    except OSError:  # no alternate
        pass
    return False


def failed(e, which):
    # The updater could not be imported or raised (see above).
    record(e)
    flags = _flags()
    flags.pop("update", None)
    if _blamed(e, which):
        flags["reboots"] = _MAX_REBOOTS  # the next boot rolls back
        _save(flags)
        machine.reset()
    retry = flags.get("retry", 0) + 1
    flags["update_failed"] = True
    if retry <= _RETRIES:
        flags["retry"] = retry
        flags["update"] = True  # again, on a fresh heap
        flags["reboots"] -= 1  # not a boot loop
        _save(flags)
        machine.reset()
    flags.pop("retry", None)
    _save(flags)


def _watch(watch):
    # Start the watchdog and the timer that feeds it until the boot deadline
    # (see config.py); returns mpfleet.py's Watch, or None without a watchdog.
    seconds = _settings().get("watchdog", 30)
    if not seconds:
        return None
    try:
        w = watch(machine.WDT(timeout=5000), seconds * 1000)  # ESP8266 takes no other
    except Exception:  # no watchdog on this port
        return None
    for t in (-1, 0):  # ESP8266: any id; ESP32: a hardware timer (-1 from 1.29)
        try:
            w.timer = machine.Timer(t)
            w.timer.init(period=500, mode=machine.Timer.PERIODIC, callback=w.tick)
            break
        except Exception:
            w.timer = None
    return w


def boot(importer, watch):
    # Mounts importer (mpfleet.py's Importer) for the chosen configuration and
    # starts the watchdog (mpfleet.py's Watch). Returns (the app to import or
    # None, what runs: (which, head, watch), what to call before the app:
    # [module, function, arguments after `now`...] or None). Imports nothing
    # versioned.
    flags = _flags()
    flags["reboots"] = flags.get("reboots", 0) + 1
    after = flags.pop("next", None)
    _empty_tmp()
    which, head, failed = _choose(flags)
    if head is None:
        _save(flags)
        print("mpfleet: nothing installed; run bootstrap.py")
        return None, None, None
    stuck = flags["reboots"] > _MAX_REBOOTS
    check = stuck and flags["reboots"] >= flags.get("check", 0)
    if check:
        flags["check"] = flags["reboots"] + min(flags["reboots"], _CHECK_EVERY)
    elif not stuck:
        flags.pop("check", None)
    _save(flags)
    print("mpfleet: boot", which, head["generation"], "reboots", flags["reboots"])
    w = _watch(watch)
    mount(importer(which), _IMPORTER)
    sys.path.insert(0, _IMPORTER)
    now = (which, head, w)
    if failed is not None:
        print("mpfleet: rolled back from generation", failed)
        failed = "generation %s: %s" % (failed, flags.get("error"))
    if failed is None and isinstance(after, list) and len(after) > 1:
        return head["app"], now, after
    if flags.get("update") or check or failed:
        # phased (True): this first stage knows `next`
        return head["app"], now, ["updater", "run", flags.get("update") or check, check, failed, None, True]
    return head["app"], now, None


def record(e):
    # Keep the error, short, in the bootflags: the app and the next report see it.
    sys.print_exception(e)
    flags = _flags()
    flags["error"] = ("%s: %s" % (type(e).__name__, e))[:80]
    _save(flags)
