"""The bench's peer: agentscope-runtime, in a venv of its own (AgentScope 1.x)."""
