"""The asyncio network layer: HTTP/1.1 (httptools), WebSocket, SockJS, SSE and HTTP streaming,
the server API, metrics and static pages. Drives the sans-I/O code in :mod:`squall.protocol`
and the sessions in :mod:`squall.core`; never imports :mod:`squall.brokers`.
"""
