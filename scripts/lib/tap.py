"""A recording TCP relay: listens on 127.0.0.1:LISTEN, relays every connection to 127.0.0.1:BROKER, and appends
every byte that passes, in both directions, to CAPTURE. The demo and the case-study test put it between the
services and the broker, so that what travelled on the broker's port can be searched afterwards. With
STREAMS, a directory, each connection's bytes are also kept apart, N.up (client to broker) and N.down, N
counting connections from 1: CAPTURE interleaves them, and an onlooker's MQTT parse needs each stream whole
(tests/casestudy/check_onlooker.py).

    python3 tap.py LISTEN BROKER CAPTURE [MAX_SECONDS [STREAMS]]

Prints "ready" once listening. Stops on SIGTERM or SIGINT, or after MAX_SECONDS (default 600).
"""
import asyncio
import signal
import sys


async def pipe(reader, writer, capture, stream):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            capture.write(data)
            if stream:
                stream.write(data)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()
        if stream:
            stream.close()


async def main(listen_port, broker_port, capture_path, max_seconds, streams_dir):
    capture = open(capture_path, "ab", buffering=0)
    connections = 0

    def stream(n, direction):
        return open(f"{streams_dir}/{n}.{direction}", "ab", buffering=0) if streams_dir else None

    async def relay(client_reader, client_writer):
        nonlocal connections
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", broker_port)
        except OSError:
            client_writer.close()
            return
        connections += 1
        try:
            await asyncio.gather(pipe(client_reader, broker_writer, capture, stream(connections, "up")),
                                 pipe(broker_reader, client_writer, capture, stream(connections, "down")))
        except asyncio.CancelledError:
            pass

    server = await asyncio.start_server(relay, "127.0.0.1", listen_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    try:
        await asyncio.wait_for(stop.wait(), timeout=max_seconds)
    except asyncio.TimeoutError:
        pass
    server.close()
    capture.close()


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5, 6):
        sys.exit(__doc__)
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                     float(sys.argv[4]) if len(sys.argv) >= 5 else 600.0, sys.argv[5] if len(sys.argv) == 6 else None))
