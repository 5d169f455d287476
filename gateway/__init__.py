"""Roost: an MQTT edge gateway that runs registered Python functions for devices."""

__version__ = "0.1.0"
