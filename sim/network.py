# Simulated Wi-Fi: always connected; the MAC comes from env MPFLEET_MAC (12 hex).
import os

STA_IF = 0
AP_IF = 1


class WLAN:
    def __init__(self, interface=STA_IF):
        self._interface = interface
        self._active = True

    def active(self, value=None):
        if value is None:
            return self._active
        self._active = bool(value)

    def isconnected(self):
        return self._interface == STA_IF

    def connect(self, ssid=None, key=None, **kwargs):
        pass

    def disconnect(self):
        pass

    def ifconfig(self, config=None):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def config(self, name, **kwargs):
        if name == "mac":
            mac = bytes.fromhex(os.getenv("MPFLEET_MAC") or "020000000001")
            if self._interface == AP_IF:
                mac = bytes([mac[0] | 2]) + mac[1:]
            return mac
        raise ValueError("unknown config param")
