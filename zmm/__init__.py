"""zmm: a local image-generation spool for a GPU shared by ComfyUI and Ollama.

The package root holds only the version, so that `import zmm` stays cheap.
"""

__version__ = "0.1.0"
