"""The ``fast`` transport: our own asyncio MQTT client on the ``mqtt5`` codec (``transport = "fast"``).

Hand-written for measured speed (benchmarks/README.md): :mod:`~gateway.transport.native.transport` is the
:class:`~gateway.transport.base.Transport`; :mod:`~gateway.transport.native.connection` the socket,
:mod:`~gateway.transport.native.reader` the packet decoder, :mod:`~gateway.transport.native.inbound` and
:mod:`~gateway.transport.native.outbound` the two halves of the session, and
:mod:`~gateway.transport.native.subscriptions` what is subscribed.
"""
