"""The worker: the loop that drains the spool through one ComfyUI server and owns
the jobs on it (`loop`), one job's life on ComfyUI (`execution`, `progress`),
its upkeep of leases, adoption and the jobs on ComfyUI (`upkeep`), its side of
the cloud lane (`cloud_fallback`), the one outcome ladder (`outcomes`), the
webhook sender beside it (`webhooks`), and running it from the CLI (`service`).
"""
