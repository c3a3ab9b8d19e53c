"""The use cases: what the server does for its callers, each applying its checks once.

Routes and sockets (`app/api`) translate HTTP, WebSocket and protocol shapes to these
calls and back; only this floor reaches the store, the bus and the run manager.
"""
