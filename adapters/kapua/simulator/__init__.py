"""A faithful Eclipse Kapua simulator (``mdm-broker simulate kapua``); see :mod:`.app`."""

from adapters.kapua.simulator.app import KapuaSimulator, build_app
from adapters.kapua.simulator.state import SimConfig, SimState

__all__ = ["KapuaSimulator", "SimConfig", "SimState", "build_app"]
