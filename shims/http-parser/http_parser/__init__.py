"""Roost's pure-Python ``http-parser``: the HTTP response parser pymesos 0.3.15 imports.

Why it exists: the upstream ``http-parser`` 0.9.0 always builds a C extension that does not
compile on Python 3.11+ (and its ``setup.py`` imports ``imp``, gone in 3.12), which makes
``pip install pymesos`` fail. This distribution, version ``0.9.0.post1``, satisfies pymesos's
requirement with the few names pymesos uses: ``http_parser.http.HttpParser`` and
``http_parser.pyparser.INVALID_CHUNK``.
"""

__version__ = "0.9.0.post1"
