# thermostat.py: the app `mpfleet demo` runs on every board. It prints what it runs, then
# says it is healthy, so the runtime keeps this configuration as the one to go back to.
import config
import sensor

where = "primary" if config.primary else "alternate (rolled back)"
print("thermostat: sensor", sensor.VERSION, "reads", sensor.read(), "C;", where, "generation", config.generation)
config.set("reboots", 0)  # healthy: this configuration is good
