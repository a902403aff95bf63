"""glide's Model Context Protocol front end: the rendering commands as MCP tools (the
official SDK's server), beside the CLI and the HTTP server, on the server's job queue.
`glide mcp` serves it over stdio; `glide serve` mounts it at /mcp."""
