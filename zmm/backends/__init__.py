"""The servers and devices zmm talks to on the GPU's host: the ComfyUI client
(`comfy`), the Ollama client (`ollama`), NVML (`gpu`), model listing and
unloading across both (`model_control`), and network failures in words (`net`).
Clients only: no spool access, no scheduling decisions.
"""
