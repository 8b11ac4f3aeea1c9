# A simulated board: `micropython -X heapsize=40k board.py` in the directory
# mpfleet sim writes (this file and the shims precompiled, sim/mpy/*.mpy), that
# directory on MICROPYPATH. (From this tree, with sim/ on MICROPYPATH, the
# shims compile from source.) Mounts the board's flash at /, then runs
# /main.py as a real board would (or the bootstrap when the flash has no
# /main.py yet).
# Environment, exit codes and files: see sim/README.md.
import gc
import sys

# The shims: import them while the host filesystem is at /. mpfleet carries
# them precompiled (sim/mpy/), so loading them takes little more heap than
# they keep. Each import's garbage is collected before the next, so that its
# holes are refilled rather than left between what stays; simsetup, which is
# dropped after setup, comes last.
import machine
gc.collect()
import network  # noqa: F401
gc.collect()
import socket  # noqa: F401
gc.collect()
import time
gc.collect()
import simsetup

flash, bootstrap = simsetup.setup()
machine._flash = flash
del sys.modules["simsetup"]
simsetup = None
sys.path[:] = ["/", "/lib"]  # only the board's flash is importable now
status = 0
try:
    gc.collect()
    if bootstrap is None:
        execfile("/main.py", {"__name__": "__main__"})  # streams from flash, like a board
    else:
        code = compile(bootstrap, "bootstrap.py", "exec")
        bootstrap = None
        exec(code, {"__name__": "__main__"})
except SystemExit as e:
    status = e.args[0] if e.args else 0
    if not isinstance(status, int):
        print(status)
        status = 1
except BaseException as e:  # noqa: B036 -- the board crashed: show it, exit 1
    sys.print_exception(e)
    status = 1
if status == 0 and machine._running():
    # At the REPL a board's timers and watchdog keep running: wait for the
    # harness to stop it, or the watchdog to reset it.
    while True:
        time.sleep(1)
machine._finish(status)
