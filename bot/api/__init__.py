"""The HTTP API (``/api/v1``): :mod:`bot.api.app`."""
