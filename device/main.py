# mpfleet first stage. Fixed: never replaced over the air, so it stays small.
#
# Every boot:
#  1. load the bootflags from RTC memory and add one to `reboots`;
#  2. pick the configuration: /ota/primary.json, or /ota/alternate.json when
#     primary is missing, was rolled back from, or `reboots` > 4 (a boot loop);
#  3. run the updater if the `update` flag is set, if there is no configuration
#     yet (first boot after bootstrap.py), or if primary loops with no alternate;
#  4. import the application module named by the configuration's `app`.
# An exception out of any of it is kept short in the bootflags (`error`) and
# the board resets, so `reboots` climbs. An updater that raises on primary
# sends the next boot to the alternate at once: it could never fix itself.
#
# Rollback marker: when main falls back to the alternate because of a boot
# loop, it appends primary's generation to /ota/bad.json (a JSON list of
# generations). Main keeps booting the alternate while primary's generation is
# listed, and the updater refuses to install a listed generation again.
#
# The importer lives here, not in the versioned `config`, because `config`
# itself is a versioned module: something fixed has to import it.
#
# Watchdog: main starts machine.WDT (where the port has one) before the
# updater and the app, with the timeout /ota.json names ("watchdog", seconds;
# 0: none). Code that hangs before the app says it is healthy is reset, so
# `reboots` climbs and the board rolls back. See config.feed().
import gc
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
_OTA = "/ota/"
_IMPORTER = "/ota/importer"


class _Importer:
    # A read-only filesystem mounted at /ota/importer and put first on sys.path:
    # `import sensorclass` opens /ota/m/sensorclass/{version}.py (or .mpy) for
    # the version the active configuration names. Files stream from flash.
    def __init__(self, modules):
        self.modules = modules

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def _path(self, path):
        path = path.lstrip("/")
        dot = path.rfind(".")
        version = self.modules.get(path[:dot]) if dot > 0 else None
        if version is None:
            raise OSError(2)  # ENOENT: let import look further along sys.path
        return "%sm/%s/%s%s" % (_OTA, path[:dot], version, path[dot:])

    def stat(self, path):
        return os.stat(self._path(path))

    def open(self, path, mode):
        return open(self._path(path), mode)

    def ilistdir(self, path):
        return iter(())


def _bootflags():
    try:
        return json.loads(machine.RTC().memory())
    except Exception:  # empty after power-on
        return {}


def _save_bootflags(flags):
    machine.RTC().memory(json.dumps(flags))


def _read(name):
    try:
        with open(_OTA + name + ".json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _empty_tmp():
    try:
        for name in os.listdir(_OTA + "tmp"):
            os.remove(_OTA + "tmp/" + name)
    except OSError:
        pass


def _installed():
    # No configuration yet (first boot after bootstrap): use whichever config
    # and updater bootstrap installed, so the updater can fetch the rest.
    modules = {}
    for name in ("config", "updater"):
        try:
            modules[name] = os.listdir(_OTA + "m/" + name)[0].rsplit(".", 1)[0]
        except (OSError, IndexError):
            return None
    return {"generation": None, "app": None, "modules": modules}


def _choose(flags):
    # Returns (which, configuration, generation rolled back from or None).
    primary = _read("primary")
    alternate = _read("alternate")
    if primary is None:
        return ("alternate", alternate, None) if alternate else (None, _installed(), None)
    if alternate is None or alternate["generation"] == primary["generation"]:
        return "primary", primary, None
    bad = _read("bad") or []
    if primary["generation"] in bad:
        return "alternate", alternate, None
    if flags["reboots"] > _MAX_REBOOTS:
        bad.append(primary["generation"])
        with open(_OTA + "bad.json", "w") as f:
            json.dump(bad[-_KEEP_BAD:], f)
        return "alternate", alternate, primary["generation"]
    return "primary", primary, None


def _boot():
    flags = _bootflags()
    flags["reboots"] = flags.get("reboots", 0) + 1
    _save_bootflags(flags)
    _empty_tmp()
    which, cfg, failed = _choose(flags)
    if cfg is None:
        print("mpfleet: nothing installed; run bootstrap.py")
        return
    print("mpfleet: boot", which, cfg["generation"], "reboots", flags["reboots"])
    try:
        with open("/ota.json") as f:
            wdt = json.load(f)["watchdog"]
        wdt = wdt and machine.WDT(timeout=wdt * 1000)
    except Exception:  # no WDT on this port, or none asked for
        wdt = None
    mount(_Importer(cfg["modules"]), _IMPORTER)
    sys.path.insert(0, _IMPORTER)
    import config

    config._wdt = wdt
    config.init(which, cfg)
    if failed is not None:
        print("mpfleet: rolled back from generation", failed)
        try:
            import updater

            updater.report("rolled_back", "generation %s: %s" % (failed, flags.get("error")))
        except Exception as e:  # best effort: the rollback itself is done
            sys.print_exception(e)
    # A boot loop with nothing to fall back to: maybe the server has a fix.
    stuck = flags["reboots"] > _MAX_REBOOTS and which == "primary"
    if flags.get("update") or which is None or stuck:
        try:
            import updater

            updater.run()  # resets after an update; returns otherwise
        except Exception as e:
            # A broken updater must not stay: it could never fix itself. Count
            # this boot as a boot loop, so the next boot rolls back.
            _record(e)
            flags = _bootflags()
            if which == "primary" and not stuck:
                flags["reboots"] = _MAX_REBOOTS
                _save_bootflags(flags)
                machine.reset()
            flags.pop("update", None)  # nothing older to go back to: run the app
            _save_bootflags(flags)
    if which is None:
        return
    sys.modules.pop("updater", None)
    gc.collect()
    print("mpfleet: running", cfg["app"])
    __import__(cfg["app"])


def _record(e):
    # Keep the error, short, in the bootflags: the app and the next report see it.
    sys.print_exception(e)
    flags = _bootflags()
    flags["error"] = ("%s: %s" % (type(e).__name__, e))[:80]
    _save_bootflags(flags)


try:
    _boot()
except Exception as e:
    _record(e)
    machine.reset()
