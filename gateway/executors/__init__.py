"""Executors run validated calls: ``inline`` in the gateway process, ``local`` on warm workers."""
