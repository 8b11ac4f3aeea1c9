# time, with sleeps that let Timer callbacks run while they wait, as on a
# board. The unix port's sleep_ms already runs them (machine.py's ticker
# schedules them); its sleep and sleep_us block in C, where none run, so these
# two wait with sleep_ms when they wait long enough to matter.
from utime import *  # noqa: F401,F403
import utime


def sleep(seconds):
    if seconds < 0.01:
        utime.sleep(seconds)
    else:
        utime.sleep_ms(int(seconds * 1000))


def sleep_us(us):
    if us < 10000:
        utime.sleep_us(us)
    else:
        utime.sleep_ms(us // 1000)
