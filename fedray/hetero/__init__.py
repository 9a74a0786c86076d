"""Simulated client heterogeneity: device and network traces, availability, simulated time."""

from fedray.hetero.simulation import Admission, Simulation, Timing, admit, build_simulation

__all__ = ["Admission", "Simulation", "Timing", "admit", "build_simulation"]
