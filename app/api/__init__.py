"""HTTP and WebSocket routers: transport only, no agent logic."""
