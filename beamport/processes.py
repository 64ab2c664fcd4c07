"""Small process helpers shared by the engines, the worker and serve's emulators."""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import socket
import sys

_LISTEN = "0A"  # a listening socket's state in /proc/net/tcp

_PR_SET_PDEATHSIG = 1


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a server this process starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent(parent_pid: int = 0) -> None:
    """Linux: be killed when the parent process dies (kill -9 included), or rather the thread of it that started this
    one: start such processes from threads that live as long as they should. With `parent_pid`, exit at once if
    that parent died before this took effect (0: no check, e.g. in a sandbox whose parent is its own init)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if parent_pid and os.getppid() != parent_pid:
        os._exit(1)


def listens_on(pid: int, port: int) -> bool:
    """Whether the process (or one it started) listens on TCP `port`."""
    import psutil

    try:
        process = psutil.Process(pid)
        for each in (process, *process.children(recursive=True)):
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in each.net_connections("tcp")):
                return True
    except psutil.Error:
        pass
    return False


def listening_addresses(port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address] | None:
    """The local addresses this host listens on at TCP `port` (from Linux's /proc/net/tcp and tcp6; None where
    those cannot be read). `::` or `0.0.0.0` is every interface."""
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                next(rows)  # the header
                for row in rows:
                    fields = row.split()
                    local, state = fields[1], fields[3]
                    address, port_hex = local.split(":")
                    if state != _LISTEN or int(port_hex, 16) != port:
                        continue
                    # Each 32-bit word of the address is in the host's byte order.
                    words = (address[i : i + 8] for i in range(0, len(address), 8))
                    raw = b"".join(int(word, 16).to_bytes(4, sys.byteorder) for word in words)
                    found.append(ipaddress.ip_address(raw))
        except OSError:
            return None
    return found


def loopback_only(addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address]) -> bool:
    """Whether every address is a loopback one (an IPv4-mapped IPv6 address counts as its IPv4 address)."""
    return all(
        (a.ipv4_mapped or a).is_loopback if isinstance(a, ipaddress.IPv6Address) else a.is_loopback for a in addresses
    )
