"""Transport: Bedrock's wire formats, routes and forwarding (HTTP, event streams, SSE)."""
