"""A plain HTTP GET for tests of the metrics endpoint: status and body, including error statuses."""

from __future__ import annotations

import urllib.error
import urllib.request


def http_get(url: str) -> tuple[int, str] | None:
    """(status, body); None while nothing answers (refused before the server binds, reset as it closes)."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:
        return None
