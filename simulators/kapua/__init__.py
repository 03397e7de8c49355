"""A faithful Eclipse Kapua simulator (``mdm-broker simulate kapua``); see :mod:`.app`."""

from simulators.kapua.app import KapuaSimulator, build_app
from simulators.kapua.state import SimConfig, SimState

__all__ = ["KapuaSimulator", "SimConfig", "SimState", "build_app"]
