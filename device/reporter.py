# mpfleet reporter: tells the server what this board did and runs, signed.
# The updater resets into finish() here after a check that installs nothing,
# and the installer after an install (the `next` bootflag), so that boot has
# only this module, updater_trust (its key) and updater_io on the heap. The
# check boot loads it only to report a rollback; the bootstrap, and a first
# stage from before runtime release 5, call finish() in the check's boot.
#
# A report is POSTed to {server}v1/{mac}/report: JSON with a counter "n"
# (/ota/trust.json "n", written before it is used, so never reused), its
# HMAC-SHA256 under this board's key in the X-Mpfleet-Hmac header
# (docs/security.md). Its body is made twice, piece by piece, once for its
# length and HMAC and once to send, so a board with 64 modules needs no more
# heap to report than one with 3.
import binascii
import gc
import json
import sys

import updater_io as io
from updater_trust import hmac, mac, trust

_OTA = "/ota/"


def _body(head):
    # The report's JSON in pieces: head, then {name: version} of the running
    # configuration, read line by line from flash.
    yield head
    sep = ""
    if io.now:
        with open(_OTA + io.now[0] + ".json") as f:
            for line in f:  # "name":["version","file","sha256"],
                if line.startswith('"'):
                    line = line.split('"', 4)
                    yield '%s"%s":"%s"' % (sep, line[1], line[3])
                    sep = ","
    yield "}}"


def report(event, error=None):
    # POST what happened, signed. Never raises.
    try:
        t = trust()
        t["n"] = t.get("n", 0) + 1
        trust(t)  # on flash before it is used: never used twice
        head = json.dumps(
            {
                "n": t["n"],
                "high": t.get("gen"),
                "event": event,
                "generation": io.gen(),
                "config": io.now and io.now[0],
                "flags": io.flags(),
                "error": error,
                "mem_free": gc.mem_free(),
                "micropython": "%d.%d.%d" % sys.implementation.version[:3],
                "mpy": getattr(sys.implementation, "_mpy", None),
            }
        )[:-1] + ',"modules":{'
        t = None
        h, k = hmac()
        n = 0
        for piece in _body(head):
            h.update(piece)
            n += len(piece)
        k = hmac(h, k)
        def send(sock):
            sock.write("Content-Type: application/json\r\nContent-Length: %d\r\nX-Mpfleet-Hmac: " % n)
            sock.write(k)
            sock.write("\r\n\r\n")
            for piece in _body(head):
                sock.write(piece)

        status, sock, _ = io.request("POST", "%sv1/%s/report" % (io.settings()["server"], mac()), 3, send)
        sock.close()
        if status not in (200, 204):
            print("mpfleet: report got HTTP", status)
    except Exception as e:
        print("mpfleet: report failed:", e)


def _file(c, name):
    # The file configuration c names for module `name`, or None.
    key = '"%s":' % name
    try:
        with open(_OTA + c + ".json") as f:
            for line in f:  # "name":["version","file","sha256"],
                if line.startswith(key):
                    return line.split('"', 6)[5]
    except OSError:
        pass


def tidy():
    # Delete installed files that neither configuration names: what the last
    # install replaced, or added before it failed, or what an install a power
    # cut stopped left. One module at a time, and the directories as
    # iterators: the same heap for 64 modules as for 3. Returns how many
    # files it deleted.
    import os

    gone = 0
    for e in os.ilistdir(_OTA + "m"):
        d = _OTA + "m/" + e[0]
        keep = (_file("primary", e[0]), _file("alternate", e[0]))
        n = 0
        for x in os.ilistdir(d):
            n += 1
            if x[0] not in keep:
                os.remove(d + "/" + x[0])
                n -= 1
                gone += 1
        if not n:
            os.rmdir(d)
    return gone


def finish(now, event, error=None, done=None, reset=False):
    # Report how an update ended (the installer resets into this; the updater
    # calls it); after an update, reset into what was installed. done: the
    # bootstrap's, called before that reset.
    io.now = now
    if event in ("updated", "update_failed"):  # a check that found nothing new installed nothing
        try:
            gone = tidy()
        except OSError as e:  # tidying only
            print("mpfleet: cleanup:", e)
            gone = 0
        if gone and "no room on flash" in (error or ""):
            # What was in the way is gone (an install a power cut stopped leaves
            # its files): the update again, once, after the report.
            f = io.flags()
            f["update"] = True
            f["reboots"] = f.get("reboots", 1) - 1  # not a boot loop
            io.save(f)
            reset = True
    gc.collect()
    print("mpfleet:", event, error or io.gen())
    report(event, error)
    if event == "updated":
        f = io.flags()
        f["reboots"] = 0  # this boot ran the new configuration's updater: not a failure
        io.save(f)
        if done:
            done()
    if event == "updated" or reset:
        import machine

        machine.reset()
    sys.modules.pop("updater_trust", None)  # a first stage from before release 8 does not
