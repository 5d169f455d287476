"""Raspberry Pi demos of the device SDK (gpiozero; mock pins on any computer)."""
