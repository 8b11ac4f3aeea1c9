# mpfleet updater_trust: this board's identity and what it trusts, shared by
# the updater (which checks a manifest's seal with them) and the reporter
# (which signs reports): the MAC, the HMAC under this board's key
# (/ota.json "key"), and /ota/trust.json. A module of its own so that the
# check boot loads neither the reporter nor the installer.
import binascii
import json

import updater_io as io


def hmac(h=None, k=None):
    # HMAC-SHA256 under this board's key. Without h: (inner hash to feed, outer
    # key pad); with them: the HMAC of what h was fed, in hex.
    import hashlib

    if h:
        k = hashlib.sha256(k)
        k.update(h.digest())
        return binascii.hexlify(k.digest())
    k = io.settings().get("key") or ""
    if len(k) != 64:
        raise ValueError("no key: run `mpfleet device bootstrap`")
    k = bytearray(binascii.unhexlify(k) + bytes(32))
    for i in range(64):
        k[i] ^= 0x36
    h = hashlib.sha256(k)
    for i in range(64):
        k[i] ^= 0x6A  # 0x36 ^ 0x5C: the outer pad
    return h, k


def trust(t=None):
    # /ota/trust.json, {"gen": highest generation accepted, "n": last report
    # counter}: read it (t None) or write t in its place, atomically.
    if t is not None:
        with open("/ota/tmp/trust.json", "w") as f:
            json.dump(t, f)
        return io.replace("/ota/tmp/trust.json", "/ota/trust.json")
    try:
        with open("/ota/trust.json") as f:
            t = json.load(f)
    except (OSError, ValueError):
        pass
    return t if isinstance(t, dict) else {}


def mac():
    import network

    return binascii.hexlify(network.WLAN(network.STA_IF).config("mac")).decode()
