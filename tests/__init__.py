"""Tests of the PlaceOS integration, client and simulator."""
