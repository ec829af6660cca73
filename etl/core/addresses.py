"""IP address text, checked as stored: no trimming, no guessing."""

from __future__ import annotations

import ipaddress


def is_ip_address(text: str) -> bool:
    """Whether ``text`` is an IPv4 or IPv6 address exactly as given (``' 8.8.8.8 '`` is not)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
