"""Example function modules bundled with Roost; each module owns a ``router``."""
