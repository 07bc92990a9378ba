"""The worker: the loop that drains the spool through one ComfyUI server
(`loop`), one job's life on ComfyUI (`execution`), its periodic upkeep
(`upkeep`), its side of the cloud lane (`cloud_fallback`), the webhook sender
beside it (`webhooks`), and running it from the CLI (`service`).
"""
