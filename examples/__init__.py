"""Examples of Roost in use; each folder has its own README."""
