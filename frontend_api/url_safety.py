"""Which URLs the service fetches from (images_url) or posts to (webhooks): public HTTPS hosts only.

The host is resolved and every address it resolves to must be public: loopback, private, link-local
(the instance metadata service at 169.254.169.254), multicast, reserved and unspecified addresses are
refused, whatever name points at them. ``allow_local`` (set only by the local mode and its tests) admits
``http://`` and loopback (never private or link-local) so a receiver on this machine can be used.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[str]]


class UnsafeUrl(ValueError):
    """The URL may not be fetched or posted to; the message says why."""


@dataclass(frozen=True)
class CheckedUrl:
    url: str
    host: str
    port: int
    addresses: tuple[str, ...]


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as err:
        raise UnsafeUrl(f"the host {host!r} does not resolve ({err})") from None
    return sorted({info[4][0] for info in infos})


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback)


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback


def check_url(url: str, *, what: str, allow_local: bool = False, resolver: Resolver = resolve) -> CheckedUrl:
    """Raise :class:`UnsafeUrl` unless ``url`` is https:// to a host with only public addresses."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise UnsafeUrl(f"{what} is not a valid URL ({err})") from None
    schemes = {"https", "http"} if allow_local else {"https"}
    if parts.scheme not in schemes:
        raise UnsafeUrl(f"{what} must be an https:// URL, got {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise UnsafeUrl(f"{what} has no host name")
    if parts.username or parts.password:
        raise UnsafeUrl(f"{what} must not carry credentials in the URL")
    port = port or (443 if parts.scheme == "https" else 80)
    addresses = tuple(resolver(parts.hostname, port))
    if not addresses:
        raise UnsafeUrl(f"the host {parts.hostname!r} of {what} does not resolve")
    private = [a for a in addresses if not is_public_address(a) and not (allow_local and _is_loopback(a))]
    if private:
        raise UnsafeUrl(
            f"{what} points at a private, loopback or link-local address ({', '.join(private)}); "
            "use a public https:// host"
        )
    return CheckedUrl(url=url, host=parts.hostname, port=port, addresses=addresses)
