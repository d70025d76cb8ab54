"""Tests of the pure-asyncio PlaceOS client."""
