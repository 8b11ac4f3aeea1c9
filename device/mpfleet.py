# mpfleet first stage, the part that stays: /main.py imports this module
# (installed precompiled as /ota/mpfleet.mpy), which runs the board. It asks
# mpfleet_boot (the part that goes: which configuration, the watchdog, what to
# do) and unloads it again, so the updater and your app have the heap to
# themselves; `config` is imported only for the app. Fixed: installed by the
# bootstrap, never replaced over the air.
import gc
import os
import sys
import time

import machine


class Importer:
    # A read-only filesystem the first stage mounts at /ota/importer, first on
    # sys.path: `import sensorclass` opens /ota/m/sensorclass/{file} for the
    # file the running configuration names (source or .mpy). It looks the
    # module up in the configuration's file at each import, so a board with 64
    # modules holds no table of them. It lives here, not in the first stage,
    # so that the first stage can be unloaded.
    def __init__(self, which):
        self.cfg = "/ota/%s.json" % which

    def _path(self, path):
        path = path.lstrip("/")
        dot = path.rfind(".")
        if dot > 0:
            key = '"%s":' % path[:dot]
            with open(self.cfg) as f:
                for line in f:  # "name":["version","file","sha256"],
                    if line.startswith(key):
                        file = line.split('"')[5]
                        if file.endswith(path[dot:]):
                            return "/ota/m/%s/%s" % (path[:dot], file)
                        break
        raise OSError(2)  # ENOENT: let import look further along sys.path

    def stat(self, path):
        return os.stat(self._path(path))

    def open(self, path, mode):
        return open(self._path(path), mode)

    def ilistdir(self, *args):  # also mount() and umount(): nothing to do
        return iter(())

    mount = umount = ilistdir


class Watch:
    # The watchdog, and the timer callback that feeds it until a deadline
    # (ticks_ms; None: for ever). Started by the first stage before anything
    # versioned is imported, so a `config` that hangs is reset too; config.py
    # moves the deadline. Here, like Importer, so the first stage can go.
    def __init__(self, wdt, ms):
        self.wdt = wdt
        self.timer = None
        self.until = time.ticks_add(time.ticks_ms(), ms)

    def tick(self, timer):
        if self.until is None or time.ticks_diff(self.until, time.ticks_ms()) > 0:
            self.wdt.feed()


def _boot():
    # mpfleet_boot only inside a function: a reference left in a stale slot of
    # this module's frame would keep the whole module (about 3k) on the heap.
    import mpfleet_boot

    try:
        return mpfleet_boot.boot(Importer, Watch)
    finally:
        del sys.modules["mpfleet_boot"]


def _update(now, todo):
    # The updater or the installer, likewise only inside a function, and
    # dropped afterwards. todo: [module, function, arguments...]; the function
    # may reset into the next one (the `next` bootflag).
    try:
        m = __import__(todo[0])
        getattr(m, todo[1])(now, *todo[2:])
    except Exception as e:
        import mpfleet_boot

        mpfleet_boot.failed(e, now[0])
    for name in (todo[0], "updater_io", "updater_trust", "reporter", "installer", "mpfleet_boot"):
        sys.modules.pop(name, None)


try:
    app, now, todo = _boot()
    gc.collect()
    if todo:
        _update(now, todo)
        gc.collect()
    if app:
        import config

        config.init(*now)
        print("mpfleet: running", app)
        __import__(app)
except Exception as e:
    import mpfleet_boot

    mpfleet_boot.record(e)
    machine.reset()
