"""Simulated substrates: the ``Device`` protocol and the ``Ideal`` device."""

from .base import Device, Ideal, check_device

__all__ = ["Device", "Ideal", "check_device"]
