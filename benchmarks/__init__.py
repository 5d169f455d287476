"""Roost's benchmark: the gateway against a null responder on the same broker, in the same run.

Run it with ``python -m benchmarks`` (``make bench``); see ``benchmarks/README.md``.
"""
