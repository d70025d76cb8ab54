"""Performance benchmarks of the PlaceOS integration (run with `scripts/bench`)."""
