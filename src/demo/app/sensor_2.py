# sensor.py, version 2: a good new version (the demo's first rollout).
VERSION = 2


def read():
    return 21.5
