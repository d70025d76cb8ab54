"""Tests of the PlaceOS simulator over real loopback sockets."""
