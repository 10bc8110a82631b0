"""
Who the client is, as the microservice is told (issue 17, item 7): the
gateway appends the address of the peer that connected to it to
C{X-Forwarded-For} (always) and to C{Forwarded} (RFC 7239; when the request
carried one).  Values a client sent are kept only when that peer is a
trusted proxy (C{http.trusted_proxies}); from anyone else they are replaced,
so a client cannot claim an address.

Sans-IO: the policy maps a peer address to the values to send.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress

_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

#: The most peer addresses whose answer is cached (cleared when full).
_CACHE_SIZE = 4096


class ClientAddressPolicy:
    """
    Decides the C{X-Forwarded-For} and C{Forwarded} values of a request.

    @ivar networks: the trusted proxies.
    """

    def __init__(self, trusted_proxies: Sequence[str] = ()) -> None:
        """
        @param trusted_proxies: addresses or networks (C{10.0.0.0/8},
            C{::1}), already validated by the configuration.
        """
        self.networks: Tuple[_Network, ...] = tuple(
            ipaddress.ip_network(p, strict=False) for p in trusted_proxies)
        self._cache: Dict[Optional[str], Tuple[str, str, bool]] = {}
        self._own: Dict[Optional[str], List[Tuple[str, str]]] = {}

    def peer(self, address: IAddress) -> Tuple[str, str, bool]:
        """
        The values for one peer.

        @param address: the peer's L{IAddress} (an C{IPv4Address} /
            C{IPv6Address} has C{host}; anything else is "unknown").
        @return: its C{X-Forwarded-For} element, its C{Forwarded} element
            (C{for=...}) and whether it is a trusted proxy.
        """
        host: Optional[str] = getattr(address, "host", None)
        cached = self._cache.get(host)
        if cached is None:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            cached = self._cache[host] = self._compute(host)
        return cached

    def _compute(self, host: Optional[str]) -> Tuple[str, str, bool]:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0]) if host else None
        except ValueError:
            ip = None
        if ip is None:
            return "unknown", "for=unknown", False
        trusted = any(ip in network for network in self.networks)
        node = f'for="[{ip}]"' if ip.version == 6 else f"for={ip}"
        return str(ip), node, trusted

    def headers(self, address: IAddress, forwarded_for: Optional[Sequence[bytes]],
                forwarded: Optional[Sequence[bytes]]) -> List[Tuple[str, str]]:
        """
        The C{X-Forwarded-For} header to send upstream, and C{Forwarded}
        when the request carried one (the request's own values count only
        from a trusted proxy; the peer is appended).

        @param forwarded_for: the request's C{X-Forwarded-For} values, if any.
        @param forwarded: its C{Forwarded} values, if any.
        """
        element, node, trusted = self.peer(address)
        if trusted and forwarded_for:
            element = ", ".join([v.decode("latin-1") for v in forwarded_for] + [element])
        if forwarded is None:
            # Forwarded only answers one: X-Forwarded-For, which every
            # request gets, is the one to read.
            return [("X-Forwarded-For", element)]
        if trusted:
            node = ", ".join([v.decode("latin-1") for v in forwarded] + [node])
        return [("X-Forwarded-For", element), ("Forwarded", node)]

    def own_headers(self, address: IAddress) -> List[Tuple[str, str]]:
        """
        L{headers} for a request that carried neither header (the common
        case: built once per peer).
        """
        host: Optional[str] = getattr(address, "host", None)
        own = self._own.get(host)
        if own is None:
            if len(self._own) >= _CACHE_SIZE:
                self._own.clear()
            own = self._own[host] = self.headers(address, None, None)
        return own
