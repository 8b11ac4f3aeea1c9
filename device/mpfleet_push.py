# mpfleet_push: optional. Updates the board as soon as `mpfleet serve --mqtt`
# says it has a new generation, instead of at its next poll. Publish it like
# any module (mpfleet module publish mpfleet_push.py) and list it in the
# device's manifest (mpfleet device set MAC --app myapp mpfleet_push=latest).
#
#   import mpfleet_push
#   mpfleet_push.run("192.168.1.10")             # waits for pushes, never returns
#   mpfleet_push.run("192.168.1.10", poll=3600)  # and checks every hour anyway
#
# or, inside your own loop:
#
#   push = mpfleet_push.Push("192.168.1.10", user="mpfleet", password="...")
#   while True:
#       push.check(1000)   # waits up to 1 s for a message
#       ...                # your work
#
# It subscribes to mpfleet/{mac}/update (retained, so a board that was off
# when the server published gets it when it connects). When the generation in
# the message is newer than the one running, it does what an app does to ask
# for an update: config.set('update') and machine.reset(); the updater then
# installs the new manifest (only if it is signed with this board's key: the
# message is a wake-up, not a command). A generation it already asked for is
# not asked for again (the flag `pushed`), so a generation the board rolled
# back from or could not fetch does not loop; the poll, if any, retries.
# Call it once your app has said it is healthy (config.set('reboots', 0)).
#
# A broker that is down or goes away is retried with a backoff (1 s doubling
# to 64 s); check() never waits longer than it is told.
#
# A minimal MQTT 3.1.1 client (CONNECT, SUBSCRIBE, PUBLISH in, PINGREQ) of its
# own rather than umqtt.simple: umqtt.simple is frozen into ESP8266 firmware but
# must be installed with mip on other ports, and no installable copy of it is
# on PyPI for the simulator; this needs nothing but socket.
import errno
import json
import socket
import time

import config
import machine
from micropython import const

_MAX_BACKOFF = const(64000)


def _mac():
    import binascii
    import network

    return binascii.hexlify(network.WLAN(network.STA_IF).config("mac")).decode()


def _str(s):
    s = s.encode() if isinstance(s, str) else s
    return bytes((len(s) >> 8, len(s) & 255)) + s


class Push:
    def __init__(self, host, port=1883, user=None, password=None, keepalive=60):
        self.addr = (host, port)
        self.user = user
        self.password = password
        self.keepalive = keepalive
        mac = _mac()
        self.id = "mpfleet-" + mac
        self.topic = "mpfleet/%s/update" % mac
        self.sock = None
        self.backoff = 0
        self.retry = time.ticks_ms()

    def _send(self, kind, body=b""):
        n = len(body)
        head = bytearray((kind,))
        while True:
            b = n & 127
            n >>= 7
            head.append(b | 128 if n else b)
            if not n:
                break
        self.sock.write(head)
        self.sock.write(body)
        self.sent = time.ticks_ms()

    def _read(self, n):
        got = self.sock.read(n)
        if len(got) != n:
            raise OSError(errno.ECONNRESET)
        return got

    def _connect(self):
        a = socket.getaddrinfo(self.addr[0], self.addr[1])[0][-1]
        self.sock = socket.socket()
        self.sock.settimeout(10)
        self.sock.connect(a)
        flags = 2  # clean session
        body = _str(self.id)
        if self.user is not None:
            flags |= 0x80
            body += _str(self.user)
            if self.password is not None:
                flags |= 0x40
                body += _str(self.password)
        ka = self.keepalive
        self._send(0x10, b"\x00\x04MQTT\x04" + bytes((flags, ka >> 8, ka & 255)) + body)
        ack = self._read(4)
        if ack[0] != 0x20 or ack[3]:
            raise OSError("mqtt: connection refused (%d)" % ack[3])
        self._send(0x82, b"\x00\x01" + _str(self.topic) + b"\x01")  # QoS 1
        self.heard = time.ticks_ms()
        print("mpfleet: push: subscribed to", self.topic)

    def _close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.backoff = min(max(self.backoff * 2, 1000), _MAX_BACKOFF)
        self.retry = time.ticks_add(time.ticks_ms(), self.backoff)

    def _packet(self, timeout):
        # One packet, or None when nothing came within timeout ms.
        self.sock.settimeout(max(timeout, 1) / 1000)
        try:
            first = self.sock.read(1)
        except OSError as e:
            if e.errno in (errno.ETIMEDOUT, errno.EAGAIN):
                return None
            raise
        if first is None:  # a port that answers a timeout with None
            return None
        if not first:
            raise OSError(errno.ECONNRESET)
        self.sock.settimeout(10)
        n = 0
        shift = 0
        while True:
            b = self._read(1)[0]
            n |= (b & 127) << shift
            shift += 7
            if not b & 128:
                break
        if n > 512:  # ours are tiny: skip anything else without holding it
            while n:
                n -= len(self._read(min(n, 64)))
            return first[0], b""
        return first[0], self._read(n) if n else b""

    def check(self, timeout=0):
        # Waits up to timeout ms for a message; resets into the update when a
        # newer generation is announced.
        end = time.ticks_add(time.ticks_ms(), timeout)
        while True:
            left = time.ticks_diff(end, time.ticks_ms())
            if self.sock is None:
                if time.ticks_diff(self.retry, time.ticks_ms()) > 0:
                    if left > 0:
                        time.sleep_ms(min(left, time.ticks_diff(self.retry, time.ticks_ms())))
                        continue
                    return
                try:
                    self._connect()
                    self.backoff = 0
                except Exception as e:  # noqa: BLE001 -- any failure: retry later
                    print("mpfleet: push: broker %s:%d: %s" % (self.addr[0], self.addr[1], e))
                    self._close()
                    continue
            try:
                ka = self.keepalive * 1000
                if time.ticks_diff(time.ticks_ms(), self.sent) > ka // 2:
                    self._send(0xC0)  # PINGREQ
                if time.ticks_diff(time.ticks_ms(), self.heard) > ka * 3 // 2:
                    raise OSError(errno.ETIMEDOUT)  # the broker went quiet
                p = self._packet(max(0, min(left, ka // 2)))
                if p:
                    self.heard = time.ticks_ms()
                    self._handle(*p)
            except OSError as e:
                print("mpfleet: push: connection lost:", e)
                self._close()
            if time.ticks_diff(end, time.ticks_ms()) <= 0:
                return

    def _handle(self, kind, body):
        if kind & 0xF0 == 0x90 and body[-1:] == b"\x80":
            raise OSError("mqtt: subscription refused")
        if kind & 0xF0 != 0x30:
            return  # CONNACK, SUBACK, PINGRESP
        at = 2 + (body[0] << 8 | body[1])
        if kind & 6:  # QoS 1: acknowledge
            self._send(0x40, body[at : at + 2])
            at += 2
        try:
            g = json.loads(body[at:])["generation"]
        except (ValueError, KeyError, TypeError):
            return  # an empty payload (device removed) or not ours
        if not isinstance(g, int) or g <= (config.generation or 0):
            return
        if g == config.get("pushed"):
            print("mpfleet: push: generation", g, "already asked for")
            return
        print("mpfleet: push: generation", g, "announced; updating")
        config.set("pushed", g)
        config.set("update")
        machine.reset()


def run(host, poll=None, **kw):
    # Waits for pushes forever; with poll (seconds), also asks for an update
    # that often, as an app without push would.
    p = Push(host, **kw)
    start = time.ticks_ms()
    while True:
        p.check(1000)
        if poll and time.ticks_diff(time.ticks_ms(), start) > poll * 1000:
            config.set("update")
            machine.reset()
