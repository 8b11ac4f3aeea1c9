# mpfleet: /main.py. The first stage is /ota/mpfleet.mpy and /ota/mpfleet_boot.mpy
# (precompiled; .py on a port that cannot load .mpy), so a boot compiles only
# these lines. Installed by the bootstrap, never replaced over the air.
import sys

sys.path.append("/ota")
import mpfleet  # noqa: E402,F401 -- runs the board
