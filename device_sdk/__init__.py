"""Roost's device SDK for MicroPython and CPython devices (see issue 8; not built yet)."""
