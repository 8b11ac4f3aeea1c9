# mpfleet updater: decides what this board should run and reports what it does.
#
# The first stage (mpfleet.py) calls run() when the `update` bootflag is set,
# when the board is stuck (every configuration it has loops), or to report a
# rollback; the first stage is unloaded meanwhile, and `config` is not loaded
# yet. run() streams {server}v1/{mac}.json to /ota/tmp/manifest.json and
# checks it (below). With a new generation it moves the manifest to
# /ota/next.json and resets into the installer (installer.py: downloads, swap),
# which resets into reporter.finish(), to report: an update is three boots,
# each with only its own code on the heap (docs/board.md); four when the
# manifest lists deltas (its head says "deltas": true): updater_delta's boot
# comes before the installer's and makes what it can from them. The check boot
# has this module, updater_trust (the board's key) and updater_io on the heap;
# the reporter is not loaded there (but to report a rollback): a check that
# finds nothing new, or fails, resets into reporter.finish() too, so a routine
# check is two boots. What an install a power cut stopped left is deleted by
# the reporter after the next install (which, if that install failed for room,
# asks for it again). The bootstrap, and a first stage from before
# runtime release 5 (it knows no `next` bootflag), run the installer and the
# reporter in the same boot instead. An error leaves the configuration as it
# was and sets a bootflag:
#   server_failed  the manifest could not be fetched: no connection, timeout, 5xx
#   update_failed  anything else: 4xx, a bad manifest, a file that breaks off or
#                  fails its check, no room on flash, a generation rolled back
#                  from, out of memory (retried twice on a fresh heap), or a
#                  stuck board that found nothing new
# Every outcome is reported to {server}v1/{mac}/report, best effort.
#
# Trust (docs/security.md): the manifest arrives sealed, its first line
# {"hmac":"<hex>"} the HMAC-SHA256 of the rest under this board's key
# (/ota.json "key"), checked over the bytes as they stream to flash before
# anything in them is used; it must name this board and its store (/ota.json
# "store"), and a generation no lower than the highest this board accepted
# (/ota/trust.json "gen"), so a replayed old manifest cannot bring old code
# back. The installer checks every file against the manifest's SHA-256.
# Reports carry a counter "n" (/ota/trust.json "n", written before it is
# used, so never reused) and their HMAC in the X-Mpfleet-Hmac header.
import gc
import json

import updater_io as io
import updater_trust as t

_MAX = const(65536)  # manifest bytes
_RETRIES = const(2)
_OTA = "/ota/"
_TMP = "/ota/tmp/"


def _reporter():
    # Imported only when this boot reports itself (a rollback, or a first stage
    # that knows no `next` bootflag): a check otherwise resets into the reporter.
    import reporter

    return reporter


def manifest(server):
    # Streams the manifest to flash and checks its seal; returns its first line
    # (generation, app...).
    me = t.mac()
    h, k = t.hmac()
    try:
        seal = io.get("%sv1/%s.json" % (server, me), _TMP + "manifest.json", h, _MAX, True)
    except OSError as e:  # run() tells server_failed by this message
        raise OSError("cannot reach %s: %s" % (server, e))
    if t.hmac(h, k) != seal[9:73]:
        raise ValueError("manifest not signed with this board's key: refused")
    h = k = seal = None
    try:
        with open(_TMP + "manifest.json") as f:
            head = json.loads(f.readline() + "}}")
    except ValueError:
        raise ValueError("manifest is not JSON with one module per line")
    g = head.get("generation")
    if not (isinstance(g, int) and isinstance(head.get("app"), str)):
        raise ValueError("bad generation or app")
    if head.get("device") != me:
        raise ValueError("manifest of device %s" % head.get("device"))
    if head.get("store") != io.settings().get("store"):
        raise ValueError("manifest of another store")
    high = t.trust().get("gen", 0)
    if g < high:
        raise ValueError("generation %d is older than %d, accepted before: refused" % (g, high))
    return head


def _update(stuck, phased):
    # Returns the event to report: 'updated', or 'boot' when there is nothing
    # new. phased: reset into the installer instead (it does not return).
    server = io.settings()["server"]
    try:
        head = manifest(server)
        g, app, d = head["generation"], head["app"], head.get("deltas")
        if g == io.gen():
            if stuck:
                raise ValueError("no newer generation yet")
            return "boot"
        try:
            with open(_OTA + "bad.json") as f:
                if g in json.load(f):
                    raise ValueError("generation %d was rolled back from" % g)
        except OSError:
            pass
        trust = t.trust()
        if g > trust.get("gen", 0):
            trust["gen"] = g  # accepted: nothing lower will be from now on
            t.trust(trust)
        head = trust = None  # not kept on the heap during the downloads
        if phased:
            io.replace(_TMP + "manifest.json", _OTA + "next.json")
            f = io.flags()
            f["reboots"] = f.get("reboots", 1) - 1  # not a boot loop
            # updater_delta's boot first when there are deltas, unless this is a retry
            # (it may be what failed): the installer fetches whole files
            d = d and not f.get("retry")
            io.save(f, ["updater_delta" if d else "installer", "run", g, app])
        import installer

        installer.files(server, g, app, _TMP + "manifest.json")
    finally:
        io.remove(_TMP + "manifest.json")
    return "updated"


def run(now, update=True, stuck=False, rolled_back=None, done=None, phased=False):
    # now: what runs (which, head, mpfleet.py's Watch or None). done: called
    # after a successful update, before the reset (the bootstrap installs
    # /main.py last). phased: the first stage knows the `next` bootflag.
    io.now = now
    if rolled_back:
        _reporter().report("rolled_back", rolled_back)
    if not update:
        return
    flags = io.flags()
    flags.pop("update", None)
    flags.pop("update_failed", None)
    flags.pop("server_failed", None)
    io.save(flags)
    error = None
    try:
        event = _update(stuck, phased and not done)
    except Exception as e:
        error = "%s: %s" % (type(e).__name__, e)
        event = "server_failed" if error.startswith("OSError: cannot reach ") else "update_failed"
    if stuck and error:
        error = "boot loop on generation %s (reboots %s); %s" % (
            io.gen(),
            io.flags().get("reboots"),
            error,
        )
    flags = io.flags()
    retry = error and error.startswith("MemoryError") and flags.get("retry", 0) < _RETRIES
    if error:
        flags[event] = True
    if retry:
        flags["retry"] = flags.get("retry", 0) + 1
        flags["update"] = True  # again, on a fresh heap
        flags["reboots"] = flags.get("reboots", 1) - 1  # not a boot loop
    else:
        flags.pop("retry", None)
    if event == "updated":
        flags["reboots"] = 0
        flags.pop("error", None)
        flags.pop("check", None)
    if phased and not done:
        # The report in a boot of its own, as after an install: a check that finds
        # nothing new never holds the manifest's code and the reporter at once.
        flags["reboots"] = flags.get("reboots", 1) - 1  # not a boot loop
        io.save(flags, ["reporter", "finish", event, error, None, retry])
    io.save(flags)
    _reporter().finish(io.now, event, error, done, retry)
