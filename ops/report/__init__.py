"""Rendering of reports and plans: JSON for machines, rich tables for people."""
