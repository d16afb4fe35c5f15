"""Accuracy and latency harnesses: data set readers, the verification protocol, reports.

Imports ``edge``; ``distill`` and ``quantize`` only lazily, inside the functions that need them.
"""
