# sensor.py, version 1: the library module the demo's app imports.
VERSION = 1


def read():
    return 21.0
