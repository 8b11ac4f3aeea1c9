# sensor.py, version 3: a bad new version (the demo's second rollout): it raises at import,
# so every board that installs it crashes at boot and, after five boots, goes back by itself.
raise RuntimeError("sensor 3: no such I2C device")
