"""The PlaceOS integration."""
