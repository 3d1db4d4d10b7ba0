"""Whether a scan runs on the server's own host and reaches it directly, as the server itself says.

A loopback port can be the server or a forwarder to somewhere else (an SSH tunnel, a sidecar proxy): only the
server, naming the socket it sees (CLIENT INFO's addr), tells the two apart. The round trip cannot: a loaded
machine stretched direct loopback PINGs to 0.16-0.25 ms while a relay in the same machine adds almost none.
Real servers, a real relay (the benchmark's), real ACLs.
"""

from __future__ import annotations

import socket
import threading

import pytest

from bench.relay import Relay
from engine.adapters.redis import RedisAdapter
from engine.keyspace import pacing
from engine.targets import RedisEndpoint
from tests.integration.test_keyspace_server_side import adapter_for


def _adapter(host: str, port: int) -> RedisAdapter:
    return RedisAdapter(RedisEndpoint(host=host, port=port), allow_mutation=False)


def test_a_direct_loopback_connection_is_confirmed_by_the_server(redis_server) -> None:
    server = redis_server()
    for allow_mutation in (True, False):  # CLIENT INFO is a read: a rehearsal asks it too
        seen = adapter_for(server, allow_mutation=allow_mutation).connect().activity()
        assert (seen.same_host, seen.direct) == (True, True)
        assert seen.reached_directly(fast_rtt_s=0.0)  # whatever the round trip
        assert seen.idle_cores is not None and seen.shown().startswith("same host, round trip ")


def test_a_forwarded_loopback_port_is_not_the_servers_host(redis_server) -> None:
    """The relay listens on loopback as a tunnel would; the server sees the relay's socket, not ours (same
    address, another port), so neither the CPU nor the shortest calls of the server's own host apply."""
    server = redis_server()
    relay = Relay(("127.0.0.1", server.port), one_way=0.0)
    threading.Thread(target=relay.serve_forever, daemon=True).start()
    try:
        seen = _adapter("127.0.0.1", relay.port).connect().activity()
    finally:
        relay.close()
    assert (seen.same_host, seen.direct, seen.idle_cores) == (False, False, None)
    assert not seen.reached_directly(fast_rtt_s=1.0)  # however short its round trip
    assert not seen.shown().startswith("same host")
    assert not pacing.begin(pacing.Policy(), 1000, seen).same_host


def test_a_user_refused_client_info_falls_back_on_the_round_trip_and_says_so(redis_server) -> None:
    server = redis_server()
    server.client().execute_command("ACL", "SETUSER", "reader", "on", ">pw", "~*", "+@read", "+info", "+ping")
    seen = adapter_for(server, username="reader", password="pw").connect().activity()
    assert (seen.same_host, seen.direct) == (True, None)
    assert seen.reached_directly(fast_rtt_s=1.0) and not seen.reached_directly(fast_rtt_s=0.0)
    assert seen.shown().startswith("same host (not confirmed: CLIENT INFO refused), round trip ")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_an_ipv6_loopback_connection_is_confirmed_too(redis_server) -> None:
    """CLIENT INFO writes an IPv6 peer as `[::1]:port` or `::1:port` by version: either is our socket."""
    server = redis_server(host="::1")
    seen = _adapter("::1", server.port).connect().activity()
    assert (seen.same_host, seen.direct) == (True, True)
