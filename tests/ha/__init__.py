"""Home Assistant-level tests of the PlaceOS integration, against the simulator."""
