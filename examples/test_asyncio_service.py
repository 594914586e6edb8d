"""asyncio services and clients in namespaces.

``with ns:`` moves the *whole thread* into the namespace, and the event loop
runs on that thread, so do not keep the loop inside a ``with`` block.
Instead create each socket inside the namespace and hand it to asyncio with
``sock=``: a socket stays in the namespace it was made in.
"""

from __future__ import annotations

import asyncio
import socket


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    data = await reader.readline()
    writer.write(data.upper())
    await writer.drain()
    writer.close()


def test_asyncio_server_and_client_in_two_namespaces(netns_pair):
    a, b = netns_pair

    with b:  # the listening socket is made inside b
        listener = socket.create_server(("::", 7000), family=socket.AF_INET6, dualstack_ipv6=True)
    with a:  # the client socket is made inside a (not connected yet)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    async def main() -> bytes:
        server = await asyncio.start_server(echo, sock=listener)
        async with server:
            loop = asyncio.get_running_loop()
            client.setblocking(False)
            await loop.sock_connect(client, ("10.0.0.2", 7000))
            reader, writer = await asyncio.open_connection(sock=client)
            writer.write(b"ping\n")
            reply = await reader.readline()
            writer.close()
            await writer.wait_closed()
            return reply

    assert asyncio.run(main()) == b"PING\n"


def test_asyncio_udp_over_ipv6(netns_pair):
    a, b = netns_pair
    with b:
        server_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    server_sock.bind(("fd00::2", 5353))
    with a:
        client_sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client_sock.connect(("fd00::2", 5353))

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data[::-1], addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self, done: asyncio.Future):
            self.done = done

        def datagram_received(self, data, addr):
            self.done.set_result((data, addr[0]))

    async def main():
        loop = asyncio.get_running_loop()
        server, _ = await loop.create_datagram_endpoint(Echo, sock=server_sock)
        done = loop.create_future()
        client, _ = await loop.create_datagram_endpoint(lambda: Client(done), sock=client_sock)
        client.sendto(b"abc")
        result = await asyncio.wait_for(done, 5)
        client.close()
        server.close()
        await asyncio.sleep(0)  # let the transports close their sockets
        return result

    assert asyncio.run(main()) == (b"cba", "fd00::2")
