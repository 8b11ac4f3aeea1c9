# Setting up a simulated board: mounts its flash at / and finds the code to
# run. board.py imports this, calls setup() and drops it, so this code takes
# no heap from the board while it runs.
import os

import machine
import vfs
from machine import _host_path
from simflash import Flash

_DEFAULT_BLOCKS = 256  # 1 MiB


def _env_int(name, default):
    value = os.getenv(name)
    return int(value) if value else default


def _mount():
    # Returns the Flash (None for a host directory); / is the board's flash after.
    image = os.getenv("MPFLEET_FLASH_IMG")
    flash = None
    if image:
        try:
            size = os.stat(image)[6]
        except OSError:
            size = 0
        fresh = size == 0
        # An existing image keeps its size, whatever MPFLEET_FLASH_BLOCKS says now.
        blocks = _env_int("MPFLEET_FLASH_BLOCKS", _DEFAULT_BLOCKS) if fresh else size // 4096
        f = open(image, "w+b" if fresh else "r+b")
        cut = _env_int("MPFLEET_CUT_AFTER_WRITES", 0)
        flash = Flash(f, blocks, cut, os.getenv("MPFLEET_CUT_TEAR") or "half")
        if fresh:
            f.write(bytearray(4096))
            f.seek(blocks * 4096 - 1)
            f.write(b"\xff")
        try:
            fs = vfs.VfsLfs2(flash)
        except OSError:  # blank or never fully formatted: format, as ESP32 firmware does
            vfs.VfsLfs2.mkfs(flash)
            fs = vfs.VfsLfs2(flash)
    else:
        directory = os.getenv("MPFLEET_FLASH_DIR")
        if not directory:
            raise SystemExit("set MPFLEET_FLASH_IMG or MPFLEET_FLASH_DIR")
        from simdir import HostDir

        fs = HostDir(directory)
    vfs.umount("/")
    vfs.mount(fs, "/")
    os.chdir("/")
    return flash


def _bootstrap_source():
    # The host's bootstrap.py, with SERVER replaced by env MPFLEET_SERVER if set,
    # and likewise the board's key, store and first report counter (what
    # `mpfleet device bootstrap` fills in), WATCHDOG and TIMEOUT.
    path = _host_path("MPFLEET_BOOTSTRAP")
    if not path:
        return None
    with machine.host.open(path, "r") as f:
        source = f.read()
    for name, env in (
        ("SERVER", "MPFLEET_SERVER"),
        ("KEY", "MPFLEET_KEY"),
        ("STORE", "MPFLEET_STORE"),
        ("COUNTER", "MPFLEET_COUNTER"),
        ("WATCHDOG", "MPFLEET_WATCHDOG"),
        ("TIMEOUT", "MPFLEET_TIMEOUT"),
    ):
        value = os.getenv(env)
        if value:
            value = repr(value) if name in ("SERVER", "KEY", "STORE") else value
            start = source.find("\n%s = " % name) + 1
            end = source.find("\n", start)
            source = source[:start] + "%s = %s" % (name, value) + source[end:]
    return source


def _has_main():
    try:
        os.stat("/main.py")
        return True
    except OSError:
        return False



def setup():
    # Returns (flash or None, bootstrap source or None: run /main.py).
    flash = _mount()
    if _has_main():
        return flash, None
    source = _bootstrap_source()
    if source is None:
        print("board: no /main.py on flash and no MPFLEET_BOOTSTRAP")
        raise SystemExit(1)
    return flash, source
