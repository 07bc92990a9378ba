"""Sharing the GPU's memory: the pure decision of what a job may do given free
VRAM and loaded models (`policy`), and the gate that gathers those facts and
carries the decision out before a job runs (`gate`).
"""
