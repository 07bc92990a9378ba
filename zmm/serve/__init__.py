"""`zmm serve` and `zmm mcp`: the spool's front door for programs (the optional
`zmm[serve]` extra). `core` is the one service every front end calls (submit,
read, steer, wait); `auth` the bearer tokens; `app` wires the Starlette app from
`openai_api`, `jobs_api`, `web` and the MCP server of `mcp_tools`. Nothing here
is imported unless `zmm serve` or `zmm mcp` runs.
"""
