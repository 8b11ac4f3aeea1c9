# A simulated board: `micropython -X heapsize=40k sim/board.py`, with sim/ on
# MICROPYPATH. Mounts the board's flash at /, then runs /main.py as a real
# board would (or the bootstrap when the flash has no /main.py yet).
# Environment, exit codes and files: see sim/README.md.
import gc
import os
import sys

# The shims: import them while the host filesystem is at /, and before the
# board runs, so that compiling them costs the board no heap later.
import machine
import network  # noqa: F401
import simsetup
import socket  # noqa: F401
import time

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
