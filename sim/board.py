# A simulated board: `micropython -X heapsize=40k sim/board.py`, with sim/ on
# MICROPYPATH. Mounts the board's flash at /, then runs /main.py as a real
# board would (or the bootstrap when the flash has no /main.py yet).
# Environment, exit codes and files: see sim/README.md.
import gc
import os
import sys

import machine  # noqa: F401 -- the shims: import them while the host filesystem is at /
import network  # noqa: F401
import simsetup

flash, bootstrap = simsetup.setup()
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
if flash and os.getenv("MPFLEET_COUNT_WRITES"):
    sys.stderr.write("writes=%d\n" % flash.writes)
sys.exit(status)
