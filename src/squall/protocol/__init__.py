"""Sans-I/O protocol code: bytes in, events and bytes out. No asyncio, sockets or brokers."""
