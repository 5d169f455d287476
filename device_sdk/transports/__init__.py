"""Adapters to MQTT client libraries: ``umqtt`` (MicroPython, MQTT 3.1.1) and ``paho`` (CPython, MQTT 5)."""
