"""Offline tools around kapso-sink: traffic simulation and analysis."""
