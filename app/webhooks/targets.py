"""Where webhooks may send: public http(s) addresses only, checked at registration and
again on every connection a delivery opens.

An operator's URL must not turn the server into a way onto its own network (SSRF): a
URL naming loopback, a private network, a cloud metadata service or this very machine
is refused, whatever its spelling (`[::1]`, `0x7f000001`, `2130706433`, an IPv4-mapped
IPv6 address, or a name that resolves to one of those).

The check at registration is not enough: a name may resolve to a public address then
and to an internal one later (DNS rebinding). So deliveries go through `CheckedBackend`,
an httpcore network backend that resolves the host itself, checks every address and
connects to the checked address, never to the name again. TLS still verifies the
certificate against the name. `WEBHOOK_ALLOW_PRIVATE=true` admits loopback, private
networks and this machine's addresses for on-premise receivers; link-local, multicast,
reserved and unspecified addresses stay refused.

The standard library does all of this (`ipaddress`, the event loop's `getaddrinfo`);
it is small enough that no dependency is needed.
"""

import asyncio
import functools
import ipaddress
import re
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Raw control characters and whitespace (a CRLF would split the request line), and
# their percent-encoded forms below space (%0d%0a) and DEL.
_RAW_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f\s]")
_ENCODED_CONTROL = re.compile(r"%(?:[01][0-9a-f]|7f)", re.IGNORECASE)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Addresses no machine has: if one binds, this system binds any address.
_NEVER_LOCAL = {
    socket.AF_INET: "192.0.2.1",
    socket.AF_INET6: "2001:db8::1",
}


class TargetRefused(Exception):
    """The URL, or an address its host resolves to, is not one webhooks may reach."""

    def __init__(self, reason: str, *, private: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.private = private  # WEBHOOK_ALLOW_PRIVATE=true would admit it


class HostUnresolved(Exception):
    """The URL's host name does not resolve (now)."""


def url_problem(url: str) -> str | None:
    """Why the URL's form is refused, or None when it is a plain http(s) URL."""
    if _RAW_CONTROL.search(url):
        return "it contains whitespace or a control character"
    if _ENCODED_CONTROL.search(url):
        return "it contains a percent-encoded control character (such as %0d%0a)"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "only http:// and https:// URLs are accepted"
    if "@" in parts.netloc:
        return (
            "it carries credentials (user:password@); the receiver should verify the "
            "webhook-signature header instead"
        )
    try:
        port = parts.port
    except ValueError:
        return "its port is not a number from 1 to 65535"
    if not parts.hostname:
        return "it has no host"
    if port == 0:
        return "its port is not a number from 1 to 65535"
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, 6to4 or NAT64."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _binds(family: int, address: str) -> bool:
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
    except OSError:
        return False
    return True


@functools.cache
def _binds_anything(family: int) -> bool:
    """Whether this system lets a socket bind an address it does not have
    (`ip_nonlocal_bind`), which makes a bind say nothing about ownership."""
    return _binds(family, _NEVER_LOCAL[family])


@functools.cache
def _host_name_addresses() -> frozenset[IPAddress]:
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None)
    except OSError:
        return frozenset()
    return frozenset(ipaddress.ip_address(info[4][0]) for info in infos)


def is_own_address(ip: IPAddress) -> bool:
    """Whether the address belongs to this machine: a socket can bind only to its own
    addresses, so a bind answers without listing interfaces."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    if _binds_anything(family):
        return ip in _host_name_addresses()
    return _binds(family, str(ip))


def address_problem(ip: IPAddress) -> tuple[str, bool] | None:
    """What kind of address webhooks may not reach this is, and whether it is a private
    kind (one WEBHOOK_ALLOW_PRIVATE admits); None for a public address."""
    ip = _embedded_ipv4(ip) or ip
    if ip.is_unspecified:
        return "an unspecified address", False
    if ip.is_loopback:
        return "a loopback address", True
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services answer)", False
    if ip.is_multicast:
        return "a multicast address", False
    if ip.is_reserved:
        return "a reserved address", False
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
    if ip.is_private or site_local or not ip.is_global:
        return "a private address", True
    if is_own_address(ip):
        return "an address of this server", True
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_addresses(host: str, addresses: Iterable[IPAddress], allow_private: bool) -> None:
    """Refuse the host if any address it resolves to is not allowed: a name with one
    internal address among public ones is refused too."""
    for ip in addresses:
        problem = address_problem(ip)
        if problem is None or (allow_private and problem[1]):
            continue
        kind, private = problem
        literal = _literal(host) == ip
        raise TargetRefused(
            f"{host} is {kind}" if literal else f"{host} resolves to {kind}", private=private
        )


async def resolve(host: str, port: int) -> list[IPAddress]:
    """The host's addresses (a numeric host in any spelling is its own address)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise HostUnresolved(f"{host} does not resolve") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not addresses:
        raise HostUnresolved(f"{host} does not resolve")
    return list(dict.fromkeys(addresses))


async def checked_addresses(host: str, port: int, allow_private: bool) -> list[IPAddress]:
    """Resolve the host and check every address; the addresses to connect to."""
    addresses = await resolve(host, port)
    check_addresses(host, addresses, allow_private)
    return addresses


async def check_url(url: str, allow_private: bool) -> None:
    """Raise `TargetRefused` (or `HostUnresolved`) saying why webhooks may not send to
    the URL; return when they may."""
    problem = url_problem(url)
    if problem is not None:
        raise TargetRefused(problem)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    await checked_addresses(parts.hostname or "", port, allow_private)


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to checked addresses: resolves the host, checks every
    address, and connects to those addresses rather than to the name, so what is
    reached is what was checked."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self._tcp = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = await checked_addresses(host, port, self.allow_private)
        except TimeoutError:
            raise HostUnresolved(f"{host} did not resolve in time") from None
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._tcp.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # resolve() returns at least one address
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._tcp.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over `CheckedBackend`. It ignores HTTP(S)_PROXY: through a
    proxy, the address checked would not be the one the request reaches."""

    def __init__(self, allow_private: bool) -> None:
        super().__init__(trust_env=False)
        # httpx takes no network backend, so its connection pool is replaced by one
        # with the same defaults over ours.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=100,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=CheckedBackend(allow_private),
        )


def checked_client(allow_private: bool) -> httpx.AsyncClient:
    """The HTTP client webhook deliveries are sent with."""
    return httpx.AsyncClient(transport=CheckedTransport(allow_private), trust_env=False)
