"""rpsim: a discrete-event simulator of pipeline-parallel LLM training on PCIe-bound GPU servers.

Never imports torch (a test enforces it); rpexec depends on rpsim, never the reverse.
"""
__version__ = "0.1.0"
