"""Demo 1: a button calls a Roost function; the LED follows the reply."""
