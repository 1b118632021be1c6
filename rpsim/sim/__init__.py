"""Discrete-event simulation of a plan on a machine: link sharing, flows, and the SimPy processes."""
