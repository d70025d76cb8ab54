"""Reliability: the fault campaign against the simulator and a real Home Assistant."""
